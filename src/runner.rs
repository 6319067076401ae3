/*!
The library's front door: a [`Runner`] built from the application's migrations, pointed at a
database (a URL or the application's own pool) and a source of tenant names, then asked to
run a command. Every command returns a typed [`FleetReport`]; nothing is printed.
*/

use crate::canary::Canary;
use crate::citus::{CitusMode, CitusSettings};
use crate::config::{
    Command, DownTarget, MissingPolicy, RunConfig, Settings, SharedConfig, TenantSource, DEFAULT_CONCURRENCY,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_LOCK_WAIT_TIMEOUT, DEFAULT_RETRIES,
};
use crate::control::CancelToken;
use crate::database::{Connector, Database, DatabaseUrl, Pool};
use crate::error::Error;
use crate::journal::JournalConfig;
use crate::journal::{RunDetail, RunRecord};
use crate::lifecycle::{self, IfExists, IfMissing};
use crate::migrate;
use crate::observer::Observer;
use crate::report::{FleetReport, RunKind};
use crate::rollback::Resume;
use crate::source::EmbeddedMigrations;
use crate::tenant::SchemaName;
use migrate_tenants_set::MigrationSet;
use std::time::Duration;

/// The migrations a [`Runner`] runs: an embedded constant or a set read from a directory.
#[derive(Debug, Clone)]
pub struct Migrations {
    tenant: TenantSet,
    /// `Some` when set explicitly (overrides an embedded shared set).
    shared: Option<Option<MigrationSet>>,
}

#[derive(Debug, Clone)]
enum TenantSet {
    Embedded(&'static EmbeddedMigrations),
    Loaded(MigrationSet),
}

impl From<&'static EmbeddedMigrations> for Migrations {
    fn from(embedded: &'static EmbeddedMigrations) -> Migrations {
        Migrations {
            tenant: TenantSet::Embedded(embedded),
            shared: None,
        }
    }
}

impl From<MigrationSet> for Migrations {
    fn from(set: MigrationSet) -> Migrations {
        Migrations {
            tenant: TenantSet::Loaded(set),
            shared: None,
        }
    }
}

impl Migrations {
    /// The validated tenant and shared sets.
    fn load(&self) -> Result<(MigrationSet, Option<MigrationSet>), Error> {
        Ok(match &self.tenant {
            TenantSet::Embedded(e) => {
                let shared = match &self.shared {
                    Some(shared) => shared.clone(),
                    None => e.shared_set()?,
                };
                (e.tenant_set()?, shared)
            }
            TenantSet::Loaded(set) => (set.clone(), self.shared.clone().flatten()),
        })
    }
}

/// A command a [`Runner`] can run (for [`Runner::run`], which also takes an observer).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Task {
    /// Apply pending migrations (shared schema first), up to and including `to` when given.
    Up {
        /// Stop after this version.
        to: Option<String>,
    },
    /// Revert applied migrations.
    Down(DownTarget),
    /// Revert the newest `steps` migrations of each tenant, then apply them again.
    Redo {
        /// How many.
        steps: usize,
    },
    /// Read every tenant's state; change nothing.
    Status,
    /// Create tenant schemas and apply every migration to each, atomically. The names are
    /// the tenants: the runner's tenant source and selection do not apply.
    CreateTenants {
        /// The new tenants.
        names: Vec<String>,
        /// Migrate a schema that already exists instead of failing it.
        if_exists_migrate: bool,
    },
    /// Revert exactly what journaled run `run` applied and kept, on each tenant it changed,
    /// newest first (with the journal's `down.sql` where this set lacks a migration).
    /// Refused before anything changes when later migrations sit on top, unless `force`.
    /// The runner's tenant source does not apply (its selection does).
    Rollback {
        /// The run's id in the journal.
        run: i64,
        /// Revert even under migrations applied later.
        force: bool,
    },
    /// Record a migration as applied (`applied`) or pending in each selected tenant's history
    /// without running it, under the tenant's lock, journaled. Refused on a tenant where
    /// the tables its `up.sql` creates say otherwise (missing when marking applied, present
    /// when marking pending), unless `force`.
    Mark {
        /// The migration's version.
        version: String,
        /// `true`: mark applied; `false`: mark pending.
        applied: bool,
        /// Mark even against the schema.
        force: bool,
    },
    /// Drop tenant schemas (`DROP SCHEMA ... CASCADE`) under their lock. The names are the
    /// tenants: the runner's tenant source and selection do not apply.
    DropTenants {
        /// The tenants.
        names: Vec<String>,
        /// Also drop schemas without a history table.
        force: bool,
        /// Skip a schema that does not exist instead of failing it.
        if_exists: bool,
    },
}

impl Task {
    /// What the report calls the task.
    pub fn kind(&self) -> RunKind {
        match self {
            Task::Up { .. } => RunKind::Up,
            Task::Down(_) => RunKind::Down,
            Task::Redo { .. } => RunKind::Redo,
            Task::Status => RunKind::Status,
            Task::CreateTenants { .. } => RunKind::TenantCreate,
            Task::DropTenants { .. } => RunKind::TenantDrop,
            Task::Rollback { .. } => RunKind::Down,
            Task::Mark { .. } => RunKind::Mark,
        }
    }
}

/// Runs an application's migrations over its tenant schemas.
///
/// ```no_run
/// use migrate_tenants::{EmbeddedMigrations, Runner, TenantSource};
///
/// pub const MIGRATIONS: EmbeddedMigrations = migrate_tenants::embed_migrations!("tests/fixtures/basic");
///
/// # fn main() -> Result<(), migrate_tenants::Error> {
/// let report = Runner::new(&MIGRATIONS)
///     .database_url("postgres://app@db.internal/app")
///     .tenants(TenantSource::Query("SELECT schema_name FROM public.tenants".into()))
///     .concurrency(8)
///     .up()?;
/// if report.exit_code() != 0 {
///     eprintln!("{} tenant(s) failed", report.summary.failed);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Runner {
    migrations: Migrations,
    connector: Option<Connector>,
    tenants: Option<TenantSource>,
    only: Vec<String>,
    exclude: Vec<String>,
    strict: bool,
    shard: Option<(u32, u32)>,
    missing: MissingPolicy,
    concurrency: usize,
    connect_timeout: Duration,
    search_path_suffix: Vec<String>,
    lock_timeout: Option<Duration>,
    statement_timeout: Option<Duration>,
    lock_wait_timeout: Option<Duration>,
    max_failures: Option<usize>,
    retries: u32,
    atomic: bool,
    cancel: Option<CancelToken>,
    shared_schema: String,
    revert_shared: bool,
    journal: bool,
    journal_schema: String,
    journal_arguments: Option<String>,
    resume: Option<(Resume, bool)>,
    allow_mixed_versions: bool,
    dry_run: bool,
    dry_run_sql: bool,
    allow_out_of_order: bool,
    canary: Option<Canary>,
    citus: CitusMode,
    session_sql: Option<String>,
}

impl Runner {
    /// A runner for these migrations (`&MIGRATIONS` from
    /// [`embed_migrations!`](crate::embed_migrations), or a
    /// [`MigrationSet::from_dir`](crate::MigrationSet::from_dir)). Defaults: 4 workers, a 10 s
    /// connect timeout, `search_path = <tenant>, public`, `public` as the shared schema.
    pub fn new(migrations: impl Into<Migrations>) -> Runner {
        Runner {
            migrations: migrations.into(),
            connector: None,
            tenants: None,
            only: Vec::new(),
            exclude: Vec::new(),
            strict: false,
            shard: None,
            missing: MissingPolicy::Error,
            concurrency: DEFAULT_CONCURRENCY,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            search_path_suffix: vec!["public".into()],
            lock_timeout: None,
            statement_timeout: None,
            lock_wait_timeout: Some(DEFAULT_LOCK_WAIT_TIMEOUT),
            max_failures: None,
            retries: DEFAULT_RETRIES,
            atomic: false,
            cancel: None,
            shared_schema: "public".into(),
            revert_shared: false,
            journal: true,
            journal_schema: crate::journal::DEFAULT_JOURNAL_SCHEMA.into(),
            journal_arguments: None,
            resume: None,
            allow_mixed_versions: false,
            dry_run: false,
            dry_run_sql: false,
            allow_out_of_order: false,
            canary: None,
            citus: CitusMode::Auto,
            session_sql: None,
        }
    }

    /// Connect with this URL (or libpq `key=value` string); the runner opens one connection
    /// per worker plus one to coordinate. Its password is never shown in errors or reports.
    pub fn database_url(mut self, url: &str) -> Runner {
        self.connector = Some(Connector::Url(DatabaseUrl::as_given(url)));
        self
    }

    /// Work on the application's pool instead: one connection coordinates, the others
    /// (at most the concurrency) migrate tenants, so `max_size` must be at least 2. The
    /// connections go back with their session state reset (`RESET ALL` and friends: settings
    /// your connection customizer applied with `SET` are undone; put them in the URL's
    /// `options` or a role default), or closed if that could not be done.
    pub fn pool(mut self, pool: Pool) -> Runner {
        self.connector = Some(Connector::Pool(pool));
        self
    }

    /// Where tenant names come from (needed by `up`, `down`, `redo` and `status`).
    pub fn tenants(mut self, source: TenantSource) -> Runner {
        self.tenants = Some(source);
        self
    }

    /// Only these of the discovered tenants; each must be among them.
    pub fn only<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Runner {
        self.only = names.into_iter().map(Into::into).collect();
        self
    }

    /// Never these tenants.
    pub fn exclude<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Runner {
        self.exclude = names.into_iter().map(Into::into).collect();
        self
    }

    /// Stop when a discovered name is not a valid tenant name (by default such names from a
    /// file, query or pattern are reported and skipped; a list is always strict).
    pub fn strict(mut self, strict: bool) -> Runner {
        self.strict = strict;
        self
    }

    /// Only part `part` of `parts` (1-based) of the selected tenants, by a stable hash of each
    /// name: `parts` machines or CI jobs, each with its own `part`, migrate disjoint parts
    /// (overlapping by mistake stays safe: each tenant is locked while it migrates).
    pub fn shard(mut self, part: u32, parts: u32) -> Runner {
        self.shard = Some((part.clamp(1, parts.max(1)), parts.max(1)));
        self
    }

    /// What to do with a tenant whose schema does not exist (default: fail it).
    pub fn missing(mut self, policy: MissingPolicy) -> Runner {
        self.missing = policy;
        self
    }

    /// Worker threads, each with one connection (default 4; with a pool, at most its
    /// `max_size - 1`).
    pub fn concurrency(mut self, workers: usize) -> Runner {
        self.concurrency = workers.max(1);
        self
    }

    /// How long to wait for the server (default 10 s; a URL's own `connect_timeout` wins).
    pub fn connect_timeout(mut self, timeout: Duration) -> Runner {
        self.connect_timeout = timeout;
        self
    }

    /// Schemas after the tenant's on `search_path` while it migrates (default `public`).
    pub fn search_path_suffix<I: IntoIterator<Item = S>, S: Into<String>>(mut self, schemas: I) -> Runner {
        self.search_path_suffix = schemas.into_iter().map(Into::into).collect();
        self
    }

    /// `lock_timeout` for migration statements: a DDL statement that waits longer for a
    /// table lock fails (and rolls back) instead of queueing the application behind it.
    pub fn lock_timeout(mut self, timeout: Duration) -> Runner {
        self.lock_timeout = Some(timeout);
        self
    }

    /// Stop starting tenants after the first failure (the others are reported skipped).
    pub fn fail_fast(mut self, fail_fast: bool) -> Runner {
        self.max_failures = if fail_fast { Some(1) } else { None };
        self
    }

    /// Stop starting tenants once this many have failed (`None`: never).
    pub fn max_failures(mut self, max: Option<usize>) -> Runner {
        self.max_failures = max.map(|m| m.max(1));
        self
    }

    /// `statement_timeout` for each migration statement (transactional migrations): bounds a
    /// statement that runs (or waits) too long on a live server.
    pub fn statement_timeout(mut self, timeout: Duration) -> Runner {
        self.statement_timeout = Some(timeout);
        self
    }

    /// How long a tenant waits for its lock while another runner migrates it (default 60 s;
    /// `None`: forever). The holder is named in the report and to the observer.
    pub fn lock_wait_timeout(mut self, timeout: Option<Duration>) -> Runner {
        self.lock_wait_timeout = timeout;
        self
    }

    /// New attempts at a tenant whose transactional migration rolled back for a passing
    /// reason (lock timeout, deadlock, serialization failure, lost connection to a server
    /// that answers again), with exponential backoff and jitter (default 2). Never for a
    /// migration that runs outside a transaction.
    pub fn retries(mut self, retries: u32) -> Runner {
        self.retries = retries;
        self
    }

    /// `up` applies all of a tenant's pending migrations in one transaction, so a tenant ends
    /// at its old version or its new one (refused before anything changes when one of them
    /// runs outside a transaction).
    pub fn atomic(mut self, atomic: bool) -> Runner {
        self.atomic = atomic;
        self
    }

    /// Stops the run when `token` is cancelled: no new tenant starts, the statements in flight
    /// are cancelled (their transactions roll back), and the report says what was left.
    pub fn cancel_token(mut self, token: CancelToken) -> Runner {
        self.cancel = Some(token);
        self
    }

    /// The schema holding the shared migrations' history (default `public`).
    pub fn shared_schema(mut self, schema: &str) -> Runner {
        self.shared_schema = schema.to_string();
        self
    }

    /// The shared-schema migrations (replaces an embedded shared set; `None`: none).
    pub fn shared_migrations(mut self, set: Option<MigrationSet>) -> Runner {
        self.migrations.shared = Some(set);
        self
    }

    /// Let `down` and `redo` revert the shared schema too, after every tenant succeeded
    /// (never by default).
    pub fn revert_shared(mut self, revert: bool) -> Runner {
        self.revert_shared = revert;
        self
    }

    /// Whether changing runs (`up`, `down`, `redo`, `tenant create`, `tenant drop`, `mark`)
    /// write the run journal (default: yes). Without it, `runs`, `--resume` and
    /// `down --run` have nothing to read; diesel's history tables are kept either way.
    pub fn journal(mut self, journal: bool) -> Runner {
        self.journal = journal;
        self
    }

    /// The schema holding the run journal (default `migrate_tenants`; created on first use).
    pub fn journal_schema(mut self, schema: &str) -> Runner {
        self.journal_schema = schema.to_string();
        self
    }

    /// How the journal shows the command that started a run (default: the command's name).
    /// Give the command line without secrets.
    pub fn journal_arguments(mut self, arguments: impl Into<String>) -> Runner {
        self.journal_arguments = Some(arguments.into());
        self
    }

    /// `up` runs only the tenants a journaled `up` run did not finish: those that failed
    /// and (unless `failed_only`) those it skipped or never reached. The tenant source does
    /// not apply (the selection does).
    pub fn resume(mut self, run: Resume, failed_only: bool) -> Runner {
        self.resume = Some((run, failed_only));
        self
    }

    /// Let `down` by a number of steps run over tenants at different versions (refused by
    /// default: the same number of steps would revert different migrations on each).
    pub fn allow_mixed_versions(mut self, allow: bool) -> Runner {
        self.allow_mixed_versions = allow;
        self
    }

    /// The newest `limit` runs of the run journal, newest first (none without a journal).
    pub fn runs(&self, limit: usize) -> Result<Vec<RunRecord>, Error> {
        let (config, mut db) = self.journal_reader()?;
        crate::journal::list_runs(&mut db.control, &config.journal_schema, limit as i64)
            .map_err(crate::journal::read_error)
    }

    /// One run of the run journal with its tenants and steps.
    pub fn run_detail(&self, id: i64) -> Result<RunDetail, Error> {
        let (config, mut db) = self.journal_reader()?;
        crate::journal::run_detail(&mut db.control, &config.journal_schema, id)
            .map_err(crate::journal::read_error)?
            .ok_or_else(|| Error::Refused {
                refusal: crate::error::Refusal::NoSuchRun,
                message: format!("the run journal (schema {}) has no run {id}", config.journal_schema),
            })
    }

    fn journal_reader(&self) -> Result<(RunConfig, Database), Error> {
        let config = self.config(true)?;
        let db = Database::connect(&config.connector, 1, config.connect_timeout)?;
        Ok((config, db))
    }

    /// Plan only: every command reads the fleet's state and reports what it would do, and
    /// changes nothing in the database (no schema, history table or journal row; advisory
    /// locks are not taken). The report's [`dry_run`](FleetReport::dry_run) is set, its
    /// outcomes are predictions, and each tenant's [`plan`](crate::TenantReport::plan) lists
    /// the steps in order.
    pub fn dry_run(mut self, dry_run: bool) -> Runner {
        self.dry_run = dry_run;
        self
    }

    /// With [`dry_run`](Runner::dry_run): each tenant's plan also holds the exact SQL the real
    /// run would send to it (lock, `search_path`, checks, bookkeeping, transaction control),
    /// a script psql can run.
    pub fn dry_run_sql(mut self, sql: bool) -> Runner {
        self.dry_run_sql = sql;
        self
    }

    /// Whether this runner only plans (see [`dry_run`](Runner::dry_run)).
    pub fn is_dry_run(&self) -> bool {
        self.dry_run
    }

    /// `up` applies a pending migration older than the tenant's newest applied one (added
    /// late, e.g. from a merged branch). By default such a tenant fails, naming both
    /// versions, and nothing is changed on it (Flyway's `outOfOrder` rule).
    pub fn allow_out_of_order(mut self, allow: bool) -> Runner {
        self.allow_out_of_order = allow;
        self
    }

    /// `up` migrates these tenants first and starts the rest of the fleet only if every one
    /// of them succeeded; otherwise the others are reported skipped, untouched.
    pub fn canary(mut self, canary: Canary) -> Runner {
        self.canary = Some(canary);
        self
    }

    /// Whether the database is a Citus coordinator (default [`CitusMode::Auto`]: when the
    /// `citus` extension is installed, found with one query per run). In Citus mode each
    /// migration is sent one statement per query inside its transaction, and new tenant
    /// schemas are distributed schemas; a Citus worker node is refused in every mode but
    /// [`CitusMode::Off`].
    pub fn citus(mut self, mode: CitusMode) -> Runner {
        self.citus = mode;
        self
    }

    /// SQL run on every session the runner uses, after connecting and after each per-tenant
    /// session reset (e.g. `SET citus.enable_unsafe_triggers = on` for a set with triggers
    /// on Citus). It may not control the transaction or change `search_path`; the run is
    /// refused before connecting otherwise. `None`: nothing.
    pub fn session_sql(mut self, sql: Option<&str>) -> Runner {
        self.session_sql = sql.map(str::to_string);
        self
    }

    /// Applies every pending migration (shared schema first).
    pub fn up(&self) -> Result<FleetReport, Error> {
        self.run(&Task::Up { to: None }, &mut ())
    }

    /// Reverts applied migrations.
    pub fn down(&self, target: DownTarget) -> Result<FleetReport, Error> {
        self.run(&Task::Down(target), &mut ())
    }

    /// Reverts the newest `steps` migrations of each tenant and applies them again, in one
    /// transaction per tenant when every step allows it.
    pub fn redo(&self, steps: usize) -> Result<FleetReport, Error> {
        self.run(&Task::Redo { steps }, &mut ())
    }

    /// Reads every tenant's state.
    pub fn status(&self) -> Result<FleetReport, Error> {
        self.run(&Task::Status, &mut ())
    }

    /// Drops tenants (`DROP SCHEMA ... CASCADE`, under each tenant's lock); a schema without a
    /// history table is refused, one that does not exist fails.
    pub fn drop_tenants<I: IntoIterator<Item = S>, S: Into<String>>(&self, names: I) -> Result<FleetReport, Error> {
        let names = names.into_iter().map(Into::into).collect();
        let task = Task::DropTenants {
            names,
            force: false,
            if_exists: false,
        };
        self.run(&task, &mut ())
    }

    /// Creates tenants and migrates each atomically.
    pub fn create_tenants<I: IntoIterator<Item = S>, S: Into<String>>(&self, names: I) -> Result<FleetReport, Error> {
        let names = names.into_iter().map(Into::into).collect();
        let task = Task::CreateTenants {
            names,
            if_exists_migrate: false,
        };
        self.run(&task, &mut ())
    }

    /// Runs `task`, telling `observer` about each tenant as it finishes.
    pub fn run(&self, task: &Task, observer: &mut dyn Observer) -> Result<FleetReport, Error> {
        let lifecycle = matches!(
            task,
            Task::CreateTenants { .. } | Task::DropTenants { .. } | Task::Rollback { .. }
        ) || (self.resume.is_some() && matches!(task, Task::Up { .. }));
        let config = self.config(lifecycle)?;
        let kind = task.kind();
        match task {
            Task::Up { to } => migrate::run(&config, &Command::Up { to: to.clone() }, kind, observer),
            Task::Down(target) => migrate::run(&config, &Command::Down(target.clone()), kind, observer),
            Task::Redo { steps } => migrate::run(&config, &Command::Redo { steps: *steps }, kind, observer),
            Task::Status => migrate::run(&config, &Command::Status, kind, observer),
            Task::Mark {
                version,
                applied,
                force,
            } => {
                let command = Command::Mark {
                    version: version.clone(),
                    applied: *applied,
                    force: *force,
                };
                migrate::run(&config, &command, kind, observer)
            }
            Task::Rollback { run, force } => {
                let command = Command::Rollback {
                    run: *run,
                    force: *force,
                };
                migrate::run(&config, &command, kind, observer)
            }
            Task::CreateTenants {
                names,
                if_exists_migrate,
            } => {
                let if_exists = if *if_exists_migrate {
                    IfExists::Migrate
                } else {
                    IfExists::Fail
                };
                lifecycle::create(&config, names, if_exists, observer)
            }
            Task::DropTenants {
                names,
                force,
                if_exists,
            } => {
                let if_missing = if *if_exists { IfMissing::Skip } else { IfMissing::Fail };
                lifecycle::drop(&config, names, *force, if_missing, observer)
            }
        }
    }

    /// Proves the tenant set on two scratch schemas of the database, never on a tenant, in
    /// transactions that are always rolled back: every `down.sql` restores the schema as it
    /// was before its `up.sql` (compared structurally), and the whole set creates or changes
    /// nothing outside the tenant's schema. Needs a database, not tenants.
    pub fn verify(&self) -> Result<crate::VerifyReport, Error> {
        let config = self.config(true)?;
        crate::verify::verify(&config)
    }

    /// Compares the structure of every selected tenant with the others at the same version
    /// (read-only, on the workers): tenants that differ from the structure most share, with
    /// the differences.
    pub fn drift(&self) -> Result<crate::DriftReport, Error> {
        let config = self.config(false)?;
        crate::drift::drift(&config)
    }

    /// Lists tenants with their state (a `status` reported as `tenant list`).
    pub fn list_tenants(&self, observer: &mut dyn Observer) -> Result<FleetReport, Error> {
        let config = self.config(false)?;
        migrate::run(&config, &Command::Status, RunKind::TenantList, observer)
    }

    /// The worker count (a multi-database run's total).
    pub(crate) fn workers(&self) -> usize {
        self.concurrency
    }

    /// The engine's configuration; `lifecycle` commands (and runs whose tenants come from
    /// the journal) name their tenants themselves.
    pub(crate) fn config(&self, lifecycle: bool) -> Result<RunConfig, Error> {
        let (migrations, shared) = self.migrations.load()?;
        let database_wide = std::sync::Arc::new(crate::config::database_wide_versions(&migrations));
        let connector = match &self.connector {
            Some(Connector::Url(url)) => {
                DatabaseUrl::validate(url.expose()).map_err(Error::Config)?;
                Connector::Url(DatabaseUrl::new(url.expose(), self.connect_timeout))
            }
            Some(pool) => pool.clone(),
            None => {
                return Err(Error::Config(
                    "no database: give the runner a database URL or a connection pool".into(),
                ))
            }
        };
        let tenants = match (&self.tenants, lifecycle) {
            (Some(source), _) => source.clone(),
            (None, true) => TenantSource::List(Vec::new()),
            (None, false) => {
                return Err(Error::Config(
                    "no tenants: give the runner a source of tenant names".into(),
                ))
            }
        };
        let schema =
            |what: &str, name: &str| SchemaName::shared(name).map_err(|e| Error::Config(format!("{what}: {e}")));
        if let Some(sql) = &self.session_sql {
            crate::citus::validate_session_sql(sql).map_err(Error::Config)?;
        }
        let search_path_suffix = self
            .search_path_suffix
            .iter()
            .map(|s| schema("search path suffix", s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RunConfig {
            connector,
            migrations,
            tenants,
            only: self.only.clone(),
            exclude: self.exclude.clone(),
            strict: self.strict,
            shard: self.shard,
            missing: self.missing,
            concurrency: self.concurrency,
            connect_timeout: self.connect_timeout,
            settings: Settings {
                search_path_suffix,
                lock_timeout: self.lock_timeout,
                statement_timeout: self.statement_timeout,
                lock_wait_timeout: self.lock_wait_timeout,
                database_wide,
                journal: None,
                citus: CitusSettings::default(),
                session_sql: self.session_sql.clone(),
            },
            max_failures: self.max_failures,
            retries: self.retries,
            atomic: self.atomic,
            cancel: self.cancel.clone(),
            shared: SharedConfig {
                schema: schema("shared schema", &self.shared_schema)?,
                migrations: shared,
                include_in_down: self.revert_shared,
            },
            journal_schema: schema("journal schema", &self.journal_schema)?,
            resume: self.resume,
            allow_mixed_versions: self.allow_mixed_versions,
            journal: match self.journal {
                true => Some(JournalConfig {
                    schema: schema("journal schema", &self.journal_schema)?,
                    arguments: self.journal_arguments.clone().unwrap_or_default(),
                }),
                false => None,
            },
            dry_run: self.dry_run,
            dry_run_sql: self.dry_run_sql,
            allow_out_of_order: self.allow_out_of_order,
            canary: self.canary.clone(),
            citus: self.citus,
        })
    }
}
