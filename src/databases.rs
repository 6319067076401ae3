/*!
Several databases, one fleet: the same command over tenants spread over several PostgreSQL
databases (shards the application routes to), each named, each with its own tenant source.

[`Databases`] is a layer over [`Runner`]: it holds a base runner (the migrations and every
setting) and the named databases, and runs a [`Task`] in three steps:

1. **Discovery**, on every database at once: its tenant source is read (one connection
   each), the names validated. A tenant found in two databases stops the run before any
   change, naming both. A database that cannot be reached gets its error as its entry and
   the others go on.
2. **Spread**: the base runner's concurrency is the fleet's total number of workers,
   divided over the databases (each at least one, none more than its cap or its tenant
   count), so a slow database never starves the others.
3. **Runs**, one thread per database, each an ordinary [`Runner::run`] over the tenants
   discovered there (its own catalog pass, shared schema, locks and report). Their
   progress reaches the [`DatabasesObserver`] on the calling thread, tagged with the
   database's name.

Nothing here prints or reads the environment: the CLI reads its fleet file and renders.
*/

use crate::config::{RunConfig, TenantSource};
use crate::database::{Connector, Database, DatabaseUrl, Pool};
use crate::discovery::{self, Discovered, Selection};
use crate::error::Error;
use crate::observer::Observer;
use crate::report::{exit, FleetReport, RunInfo, RunKind, Summary, TenantReport};
use crate::runner::{Runner, Task};
use crate::tenant::{NameError, SchemaName};
use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::Instant;

/// One database of a multi-database fleet: a name, where to connect, where its tenants
/// come from, and an optional cap on its workers.
#[derive(Debug, Clone)]
pub struct NamedDatabase {
    name: String,
    connector: Connector,
    tenants: Option<TenantSource>,
    max_concurrency: Option<usize>,
}

impl NamedDatabase {
    /// A database reached with this URL (or libpq `key=value` string; its password is never
    /// shown).
    pub fn url(name: &str, url: &str) -> NamedDatabase {
        NamedDatabase::with(name, Connector::Url(DatabaseUrl::as_given(url)))
    }

    /// A database reached through the application's pool (`max_size` at least 2).
    pub fn pool(name: &str, pool: Pool) -> NamedDatabase {
        NamedDatabase::with(name, Connector::Pool(pool))
    }

    fn with(name: &str, connector: Connector) -> NamedDatabase {
        NamedDatabase {
            name: name.to_string(),
            connector,
            tenants: None,
            max_concurrency: None,
        }
    }

    /// Where this database's tenant names come from (needed by every command but
    /// `tenant create` and `tenant drop`).
    pub fn tenants(mut self, source: TenantSource) -> NamedDatabase {
        self.tenants = Some(source);
        self
    }

    /// At most this many workers on this database (default: no cap of its own).
    pub fn max_concurrency(mut self, workers: usize) -> NamedDatabase {
        self.max_concurrency = Some(workers.max(1));
        self
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The base runner pointed at this database.
    fn runner(&self, base: &Runner) -> Runner {
        let runner = match &self.connector {
            Connector::Url(url) => base.clone().database_url(url.expose()),
            Connector::Pool(pool) => base.clone().pool(pool.clone()),
        };
        match &self.tenants {
            Some(source) => runner.tenants(source.clone()),
            None => runner,
        }
    }
}

/// Why a multi-database run could not start (nothing was changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DatabasesError {
    /// No database to run on.
    #[error("no database: the fleet names none")]
    NoDatabase,
    /// Two databases have the same name.
    #[error("the database name {0:?} is used twice")]
    DuplicateName(String),
    /// A selected database is not in the fleet.
    #[error("no database named {}; the fleet has: {}", .unknown.join(", "), .known.join(", "))]
    UnknownDatabase {
        /// The names asked for that do not exist.
        unknown: Vec<String>,
        /// Every database of the fleet.
        known: Vec<String>,
    },
    /// A database has no tenant source.
    #[error("database {0:?} has no tenant source")]
    NoTenantSource(String),
    /// Tenants found in more than one database.
    #[error("tenant(s) found in more than one database; nothing was changed:{}",
        .0.iter().map(|d| format!("\n  - {} in {}", d.tenant, d.databases.join(" and "))).collect::<String>())]
    DuplicateTenants(Vec<DuplicateTenant>),
    /// `tenant create` needs exactly one database.
    #[error("creating tenants needs exactly one database to create them in (selected: {})",
        if .0.is_empty() { "none".to_string() } else { .0.join(", ") })]
    CreateWhere(Vec<String>),
    /// A database whose tenants could not be read, so names cannot be checked against it.
    #[error("cannot check the tenant names against database {database:?}, whose tenants could not be read: {message}")]
    Unchecked {
        /// The database.
        database: String,
        /// Why its tenants could not be read.
        message: String,
    },
    /// `tenant drop`: names that are tenants of no database.
    #[error("{} not a tenant of any database{}; name the database to drop it from", .names.join(", "),
        if .unread.is_empty() { String::new() } else { format!(" that could be read (not read: {})", .unread.join(", ")) })]
    NotFound {
        /// The names.
        names: Vec<String>,
        /// Databases whose tenants could not be read.
        unread: Vec<String>,
    },
}

/// A tenant found in several databases.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DuplicateTenant {
    /// The tenant.
    pub tenant: String,
    /// The databases holding it.
    pub databases: Vec<String>,
}

/// The outcome of one database's part of a run.
#[derive(Debug)]
#[non_exhaustive]
pub struct DatabaseReport {
    /// The database's name.
    pub name: String,
    /// Its report, or why its part could not run (unreachable, its tenants unreadable, ...).
    pub result: Result<FleetReport, Error>,
}

impl DatabaseReport {
    /// The exit code of this database's part alone.
    pub fn exit_code(&self) -> i32 {
        match &self.result {
            Ok(report) => report.exit_code(),
            Err(e) => e.exit_code(),
        }
    }
}

/// Counts over a multi-database run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct DatabasesSummary {
    /// Databases in the run.
    pub databases: usize,
    /// Databases whose part could not run (an error instead of a report).
    pub failed_databases: usize,
    /// Every database's tenants together.
    #[serde(flatten)]
    pub tenants: Summary,
}

/// The report of a run over several databases, in the order of their names.
#[derive(Debug)]
#[non_exhaustive]
pub struct DatabasesReport {
    /// The command.
    pub command: RunKind,
    /// One entry per database.
    pub databases: Vec<DatabaseReport>,
    /// Counts over every database.
    pub summary: DatabasesSummary,
    /// Wall time of the whole run, in milliseconds.
    pub elapsed_ms: u64,
}

impl DatabasesReport {
    /// The exit code of the whole run: 130 if it was interrupted, else the code every
    /// database agrees on (0 when all succeeded, 3 when none could be reached, ...), else 1
    /// (some part failed while others did not).
    pub fn exit_code(&self) -> i32 {
        combine(self.databases.iter().map(DatabaseReport::exit_code))
    }
}

/// Combines exit codes: interrupted wins, then unanimity, else 1.
pub(crate) fn combine(codes: impl IntoIterator<Item = i32>) -> i32 {
    let codes: Vec<i32> = codes.into_iter().collect();
    match codes.first() {
        None => exit::SUCCESS,
        Some(_) if codes.contains(&exit::INTERRUPTED) => exit::INTERRUPTED,
        Some(first) if codes.iter().all(|c| c == first) => *first,
        Some(_) => exit::TENANT_FAILED,
    }
}

/// Receives progress of a multi-database run, on the calling thread, each event tagged with
/// its database's name (see [`Observer`] for what each event means).
pub trait DatabasesObserver {
    /// A database's run is connected and about to start.
    fn started(&mut self, _database: &str, _run: &RunInfo) {}
    /// A database's tenants (after selection); `invalid` names were refused.
    fn discovered(&mut self, _database: &str, _tenants: &[SchemaName], _invalid: &[NameError]) {}
    /// A database's shared schema is done.
    fn shared_done(&mut self, database: &str, report: &TenantReport) {
        self.tenant_done(database, report);
    }
    /// One tenant is done.
    fn tenant_done(&mut self, _database: &str, _report: &TenantReport) {}
    /// A tenant waits for its lock, held by another runner.
    fn waiting(&mut self, _database: &str, _tenant: &SchemaName, _holder: &str) {}
    /// A problem found once for a database's run that does not stop it.
    fn warning(&mut self, _database: &str, _message: &str) {}
    /// A database's part is over (its report, or its error).
    fn database_done(&mut self, _report: &DatabaseReport) {}
}

/// An observer that ignores everything.
impl DatabasesObserver for () {}

/// Runs commands over tenants spread over several databases.
///
/// ```no_run
/// use migrate_tenants::{Databases, EmbeddedMigrations, NamedDatabase, Runner, TenantSource};
///
/// pub const MIGRATIONS: EmbeddedMigrations = migrate_tenants::embed_migrations!("tests/fixtures/basic");
///
/// # fn main() -> Result<(), migrate_tenants::Error> {
/// let pattern = || TenantSource::Pattern("tenant\\_%".into());
/// let fleet = Databases::new(Runner::new(&MIGRATIONS).concurrency(8))
///     .database(NamedDatabase::url("eu", "postgres://app@eu.db.internal/app").tenants(pattern()))
///     .database(NamedDatabase::url("us", "postgres://app@us.db.internal/app").tenants(pattern()).max_concurrency(2));
/// let report = fleet.up()?;
/// for db in &report.databases {
///     match &db.result {
///         Ok(r) => println!("{}: {} tenant(s), {} failed", db.name, r.summary.tenants, r.summary.failed),
///         Err(e) => println!("{}: {e}", db.name),
///     }
/// }
/// std::process::exit(report.exit_code());
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Databases {
    base: Runner,
    databases: Vec<NamedDatabase>,
    selected: Vec<String>,
}

impl Databases {
    /// A fleet run with `base`'s migrations and settings; its database and tenant source
    /// are replaced by each database's, and its concurrency is the total over all databases.
    pub fn new(base: Runner) -> Databases {
        Databases {
            base,
            databases: Vec::new(),
            selected: Vec::new(),
        }
    }

    /// Adds a database.
    pub fn database(mut self, database: NamedDatabase) -> Databases {
        self.databases.push(database);
        self
    }

    /// Only these databases (empty: all). `tenant create` needs exactly one.
    pub fn select<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Databases {
        self.selected = names.into_iter().map(Into::into).collect();
        self
    }

    /// The databases' names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.databases.iter().map(NamedDatabase::name).collect()
    }

    /// Applies every pending migration on every database.
    pub fn up(&self) -> Result<DatabasesReport, Error> {
        self.run(&Task::Up { to: None }, &mut ())
    }

    /// Reads every tenant's state on every database.
    pub fn status(&self) -> Result<DatabasesReport, Error> {
        self.run(&Task::Status, &mut ())
    }

    /// Runs `task` over the selected databases. `Err` means nothing was changed anywhere (a
    /// configuration error, a tenant in two databases); a database that fails alone has its
    /// error in its entry of the report.
    pub fn run(&self, task: &Task, observer: &mut dyn DatabasesObserver) -> Result<DatabasesReport, Error> {
        self.execute(Some(task), task.kind(), observer)
    }

    /// Lists every database's tenants with their state (a `status` reported as `tenant list`).
    pub fn list_tenants(&self, observer: &mut dyn DatabasesObserver) -> Result<DatabasesReport, Error> {
        self.execute(None, RunKind::TenantList, observer)
    }

    fn execute(
        &self,
        task: Option<&Task>,
        kind: RunKind,
        observer: &mut dyn DatabasesObserver,
    ) -> Result<DatabasesReport, Error> {
        let clock = Instant::now();
        let chosen = self.chosen()?;
        let plans = match task {
            Some(Task::CreateTenants { names, .. }) => self.plan_create(&chosen, names)?,
            Some(Task::DropTenants { names, .. }) => self.plan_drop(&chosen, names)?,
            _ => self.plan_migrate(&chosen)?,
        };
        let databases = run_all(plans, task, observer);
        Ok(DatabasesReport::new(kind, databases, clock))
    }

    /// The selected databases, in the fleet's order.
    fn chosen(&self) -> Result<Vec<&NamedDatabase>, DatabasesError> {
        if self.databases.is_empty() {
            return Err(DatabasesError::NoDatabase);
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(twice) = self.databases.iter().find(|d| !seen.insert(d.name.as_str())) {
            return Err(DatabasesError::DuplicateName(twice.name.clone()));
        }
        let unknown: Vec<String> = self
            .selected
            .iter()
            .filter(|s| !seen.contains(s.as_str()))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            let known = self.names().into_iter().map(str::to_string).collect();
            return Err(DatabasesError::UnknownDatabase { unknown, known });
        }
        Ok(self
            .databases
            .iter()
            .filter(|d| self.selected.is_empty() || self.selected.contains(&d.name))
            .collect())
    }

    /// `up`, `down`, `redo`, `status`, `tenant list`: each database's discovered tenants,
    /// unique across the fleet, then selected (`only` over the whole fleet).
    fn plan_migrate(&self, chosen: &[&NamedDatabase]) -> Result<Vec<Plan>, Error> {
        if let Some(db) = chosen.iter().find(|d| d.tenants.is_none()) {
            return Err(DatabasesError::NoTenantSource(db.name.clone()).into());
        }
        let configs = configs(&self.base, chosen, false)?;
        let found = discover_all(&configs);
        refuse_duplicates(chosen, &found)?;
        let only = &configs[0].only;
        let known: Vec<&str> = found
            .iter()
            .flatten()
            .flat_map(|d| d.tenants.iter().map(SchemaName::as_str))
            .collect();
        let missing: Vec<String> = only.iter().filter(|o| !known.contains(&o.as_str())).cloned().collect();
        if !missing.is_empty() && found.iter().all(Result::is_ok) {
            return Err(discovery::DiscoveryError::NotFound(missing).into());
        }
        let demand = |d: &Discovered| d.tenants.len();
        let mut plans = Vec::new();
        for ((db, config), found) in chosen.iter().zip(&configs).zip(found) {
            let found = found.map(|d| select(config, d));
            plans.push(Plan::new(db, &self.base, found, None));
        }
        spread(&mut plans, self.total(), |p| p.found.as_ref().map_or(0, demand));
        Ok(plans)
    }

    /// `tenant create`: exactly one database, and names that are tenants of no other one.
    fn plan_create(&self, chosen: &[&NamedDatabase], names: &[String]) -> Result<Vec<Plan>, Error> {
        let [target] = chosen else {
            let selected = chosen.iter().map(|d| d.name.clone()).collect();
            let selected = if self.selected.is_empty() { Vec::new() } else { selected };
            return Err(DatabasesError::CreateWhere(selected).into());
        };
        let others: Vec<&NamedDatabase> = self
            .databases
            .iter()
            .filter(|d| d.name != target.name && d.tenants.is_some())
            .collect();
        let configs = configs(&self.base, &others, false)?;
        let found = discover_all(&configs);
        let mut taken = Vec::new();
        for (db, found) in others.iter().zip(found) {
            let found = found.map_err(|e| DatabasesError::Unchecked {
                database: db.name.clone(),
                message: e.to_string(),
            })?;
            for name in names
                .iter()
                .filter(|n| found.tenants.iter().any(|t| t.as_str() == n.as_str()))
            {
                taken.push(DuplicateTenant {
                    tenant: name.clone(),
                    databases: vec![db.name.clone(), target.name.clone()],
                });
            }
        }
        if !taken.is_empty() {
            return Err(DatabasesError::DuplicateTenants(taken).into());
        }
        let mut plan = Plan::new(target, &self.base, Ok(Discovered::default()), Some(names.to_vec()));
        plan.workers = self.total().min(cap(target));
        Ok(vec![plan])
    }

    /// `tenant drop`: each name to the database that holds it (with one database selected,
    /// every name goes there).
    fn plan_drop(&self, chosen: &[&NamedDatabase], names: &[String]) -> Result<Vec<Plan>, Error> {
        configs(&self.base, chosen, true)?;
        let total = self.total();
        if let [only] = chosen {
            let mut plan = Plan::new(only, &self.base, Ok(Discovered::default()), Some(names.to_vec()));
            plan.workers = total.min(cap(only));
            return Ok(vec![plan]);
        }
        if let Some(db) = chosen.iter().find(|d| d.tenants.is_none()) {
            return Err(DatabasesError::NoTenantSource(db.name.clone()).into());
        }
        let found = discover_all(&configs(&self.base, chosen, false)?);
        refuse_duplicates(chosen, &found)?;
        let holds = |f: &Result<Discovered, Error>, n: &str| {
            f.as_ref().is_ok_and(|d| d.tenants.iter().any(|t| t.as_str() == n))
        };
        let lost: Vec<String> = names
            .iter()
            .filter(|n| !found.iter().any(|f| holds(f, n)))
            .cloned()
            .collect();
        if !lost.is_empty() {
            let unread = chosen
                .iter()
                .zip(&found)
                .filter(|(_, f)| f.is_err())
                .map(|(d, _)| d.name.clone());
            return Err(DatabasesError::NotFound {
                names: lost,
                unread: unread.collect(),
            }
            .into());
        }
        let mut plans = Vec::new();
        for (db, found) in chosen.iter().zip(found) {
            let mine: Vec<String> = names.iter().filter(|n| holds(&found, n)).cloned().collect();
            match found {
                Err(e) => plans.push(Plan::new(db, &self.base, Err(e), None)),
                Ok(_) if mine.is_empty() => {}
                Ok(d) => plans.push(Plan::new(db, &self.base, Ok(d), Some(mine))),
            }
        }
        spread(&mut plans, total, |p| p.names.as_ref().map_or(0, Vec::len));
        Ok(plans)
    }

    /// The fleet's total worker count (the base runner's concurrency).
    fn total(&self) -> usize {
        self.base.workers()
    }
}

/// A database's cap on its workers.
fn cap(db: &NamedDatabase) -> usize {
    db.max_concurrency.unwrap_or(usize::MAX)
}

/// Each database's engine configuration (which also checks the runner's settings and the
/// URL before anything connects).
fn configs(base: &Runner, dbs: &[&NamedDatabase], lifecycle: bool) -> Result<Vec<RunConfig>, Error> {
    dbs.iter()
        .map(|db| {
            db.runner(base).config(lifecycle).map_err(|e| match e {
                Error::Config(message) => Error::Config(format!("database {}: {message}", db.name)),
                other => other,
            })
        })
        .collect()
}

/// Reads every database's tenants at once (one connection each): the full, validated list
/// (no `only`, `exclude` or shard yet).
fn discover_all(configs: &[RunConfig]) -> Vec<Result<Discovered, Error>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = configs.iter().map(|c| scope.spawn(move || discover(c))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Config("internal error: discovery panicked".into())))
            })
            .collect()
    })
}

/// One database's tenants, validated (strictly for a list, or when the run is strict).
fn discover(config: &RunConfig) -> Result<Discovered, Error> {
    let names = match discovery::read_offline(&config.tenants)? {
        Some(names) => names,
        None => {
            let mut db = Database::connect(&config.connector, 1, config.connect_timeout)?;
            let mut names = discovery::read_from_database(&mut db.control, &config.tenants)?;
            if config.tenants == TenantSource::AllTenants {
                names.retain(|n| n != config.shared.schema.as_str());
            }
            names
        }
    };
    let selection = Selection {
        only: &[],
        exclude: &[],
        strict: config.strict || matches!(config.tenants, TenantSource::List(_)),
        shared: &config.shared.schema,
        shard: None,
    };
    Ok(discovery::select(names, &selection)?)
}

/// The run's selection on one database's tenants: `only` (checked over the whole fleet),
/// `exclude`, the shard.
fn select(config: &RunConfig, mut found: Discovered) -> Discovered {
    found.tenants.retain(|t| {
        let only = config.only.is_empty() || config.only.iter().any(|o| o == t.as_str());
        let shard = config.shard.is_none_or(|(part, parts)| t.shard(parts) == part);
        only && shard && !config.exclude.iter().any(|x| x == t.as_str())
    });
    found
}

/// Refuses tenants found in more than one database.
fn refuse_duplicates(dbs: &[&NamedDatabase], found: &[Result<Discovered, Error>]) -> Result<(), DatabasesError> {
    let mut owners: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (db, found) in dbs.iter().zip(found) {
        for tenant in found.iter().flat_map(|d| &d.tenants) {
            owners.entry(tenant.as_str()).or_default().push(db.name.clone());
        }
    }
    let twice: Vec<DuplicateTenant> = owners
        .into_iter()
        .filter(|(_, dbs)| dbs.len() > 1)
        .map(|(tenant, databases)| DuplicateTenant {
            tenant: tenant.to_string(),
            databases,
        })
        .collect();
    match twice.is_empty() {
        true => Ok(()),
        false => Err(DatabasesError::DuplicateTenants(twice)),
    }
}

/// Gives each plan its share of `total` workers: one each first, then one at a time to
/// each database still below its cap and its demand.
fn spread(plans: &mut [Plan], total: usize, demand: impl Fn(&Plan) -> usize) {
    let limits: Vec<usize> = plans.iter().map(|p| p.cap.min(demand(p)).max(1)).collect();
    let mut left = total.saturating_sub(plans.len());
    for plan in plans.iter_mut() {
        plan.workers = 1;
    }
    while left > 0 {
        let mut gave = false;
        for (plan, limit) in plans.iter_mut().zip(&limits) {
            if left > 0 && plan.workers < *limit {
                plan.workers += 1;
                left -= 1;
                gave = true;
            }
        }
        if !gave {
            break;
        }
    }
}

/// What one database's part of the run is.
struct Plan {
    name: String,
    runner: Runner,
    /// Its tenants, or why they could not be read.
    found: Result<Discovered, Error>,
    /// The names of a lifecycle task.
    names: Option<Vec<String>>,
    cap: usize,
    workers: usize,
}

impl Plan {
    fn new(db: &NamedDatabase, base: &Runner, found: Result<Discovered, Error>, names: Option<Vec<String>>) -> Plan {
        Plan {
            name: db.name.clone(),
            runner: db.runner(base),
            found,
            names,
            cap: cap(db),
            workers: 1,
        }
    }

    /// Runs this database's part, forwarding its progress to `tx`.
    fn run(self, task: Option<&Task>, mut forward: Forward) -> DatabaseReport {
        let found = match self.found {
            Ok(found) => found,
            Err(e) => {
                return DatabaseReport {
                    name: self.name,
                    result: Err(e),
                }
            }
        };
        let names: Vec<String> = found.tenants.iter().map(ToString::to_string).collect();
        let runner = self
            .runner
            .concurrency(self.workers)
            .tenants(TenantSource::List(names))
            .only(Vec::<String>::new())
            .exclude(Vec::<String>::new());
        let task = match (task, self.names) {
            (Some(Task::CreateTenants { if_exists_migrate, .. }), Some(names)) => Some(Task::CreateTenants {
                names,
                if_exists_migrate: *if_exists_migrate,
            }),
            (Some(Task::DropTenants { force, if_exists, .. }), Some(names)) => Some(Task::DropTenants {
                names,
                force: *force,
                if_exists: *if_exists,
            }),
            (task, _) => task.cloned(),
        };
        let invalid = found.invalid;
        forward.invalid.clone_from(&invalid);
        let result = match &task {
            Some(task) => runner.run(task, &mut forward),
            None => runner.list_tenants(&mut forward),
        };
        let result = result.map(|mut report| {
            report.invalid_names.extend(invalid.iter().map(ToString::to_string));
            report
        });
        DatabaseReport {
            name: self.name,
            result,
        }
    }
}

/// Progress from a database's thread to the calling thread.
enum Event {
    Started(RunInfo),
    Discovered(Vec<SchemaName>, Vec<NameError>),
    Shared(TenantReport),
    Tenant(TenantReport),
    Waiting(SchemaName, String),
    Warning(String),
    /// The database's part is over.
    Done(Box<DatabaseReport>),
}

/// The observer of one database's run: sends everything to the calling thread.
struct Forward {
    tx: mpsc::Sender<Message>,
    /// The database's place in the run.
    index: usize,
    /// Names refused when the fleet discovered this database's tenants.
    invalid: Vec<NameError>,
}

impl Forward {
    fn new(tx: mpsc::Sender<Message>, index: usize) -> Forward {
        Forward {
            tx,
            index,
            invalid: Vec::new(),
        }
    }

    fn send(&self, event: Event) {
        // The calling thread outlives every database's thread: a send cannot fail.
        let _ = self.tx.send((self.index, event));
    }
}

impl Observer for Forward {
    fn started(&mut self, run: &RunInfo) {
        self.send(Event::Started(run.clone()));
    }
    fn discovered(&mut self, tenants: &[SchemaName], invalid: &[NameError]) {
        let mut all = self.invalid.clone();
        all.extend_from_slice(invalid);
        self.send(Event::Discovered(tenants.to_vec(), all));
    }
    fn shared_done(&mut self, report: &TenantReport) {
        self.send(Event::Shared(report.clone()));
    }
    fn tenant_done(&mut self, report: &TenantReport) {
        self.send(Event::Tenant(report.clone()));
    }
    fn waiting(&mut self, tenant: &SchemaName, holder: &str) {
        self.send(Event::Waiting(tenant.clone(), holder.to_string()));
    }
    fn warning(&mut self, message: &str) {
        self.send(Event::Warning(message.to_string()));
    }
}

/// A message to the calling thread: an event of the database at this index.
type Message = (usize, Event);

/// Runs every plan on a thread of its own; progress reaches `observer` on this thread.
/// Entries come back in the plans' order.
fn run_all(plans: Vec<Plan>, task: Option<&Task>, observer: &mut dyn DatabasesObserver) -> Vec<DatabaseReport> {
    let names: Vec<String> = plans.iter().map(|p| p.name.clone()).collect();
    let (tx, rx) = mpsc::channel::<Message>();
    let mut done: Vec<DatabaseReport> = Vec::new();
    std::thread::scope(|scope| {
        for (i, plan) in plans.into_iter().enumerate() {
            let tx = tx.clone();
            scope.spawn(move || {
                let report = plan.run(task, Forward::new(tx.clone(), i));
                let _ = tx.send((i, Event::Done(Box::new(report))));
            });
        }
        drop(tx);
        for (i, event) in rx {
            match event {
                Event::Done(report) => {
                    observer.database_done(&report);
                    done.push(*report);
                }
                event => deliver(observer, &names[i], event),
            }
        }
    });
    done.sort_by_key(|r| names.iter().position(|n| *n == r.name));
    done
}

/// Hands one event to the observer.
fn deliver(observer: &mut dyn DatabasesObserver, database: &str, event: Event) {
    match event {
        Event::Started(run) => observer.started(database, &run),
        Event::Discovered(tenants, invalid) => observer.discovered(database, &tenants, &invalid),
        Event::Shared(report) => observer.shared_done(database, &report),
        Event::Tenant(report) => observer.tenant_done(database, &report),
        Event::Waiting(tenant, holder) => observer.waiting(database, &tenant, &holder),
        Event::Warning(message) => observer.warning(database, &message),
        Event::Done(report) => observer.database_done(&report),
    }
}

impl DatabasesReport {
    fn new(command: RunKind, databases: Vec<DatabaseReport>, clock: Instant) -> DatabasesReport {
        let mut summary = DatabasesSummary {
            databases: databases.len(),
            ..DatabasesSummary::default()
        };
        for db in &databases {
            match &db.result {
                Ok(report) => add(&mut summary.tenants, &report.summary),
                Err(_) => summary.failed_databases += 1,
            }
        }
        DatabasesReport {
            command,
            databases,
            summary,
            elapsed_ms: clock.elapsed().as_millis().min(u64::MAX as u128) as u64,
        }
    }
}

/// Adds one database's counts to the fleet's.
fn add(total: &mut Summary, one: &Summary) {
    total.tenants += one.tenants;
    total.changed += one.changed;
    total.unchanged += one.unchanged;
    total.failed += one.failed;
    total.skipped += one.skipped;
    total.applied += one.applied;
    total.reverted += one.reverted;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plans(caps: &[usize]) -> Vec<Plan> {
        caps.iter()
            .enumerate()
            .map(|(i, cap)| {
                let db = NamedDatabase::url(&format!("d{i}"), "postgres://x@localhost/x").max_concurrency(*cap);
                let set = migrate_tenants_set::MigrationSet::__unchecked(
                    migrate_tenants_set::Origin::Directory("none".into()),
                    Vec::new(),
                );
                Plan::new(&db, &Runner::new(set), Ok(Discovered::default()), None)
            })
            .collect()
    }

    #[test]
    fn workers_are_spread_with_caps_and_demand() {
        let mut p = plans(&[100, 1, 100]);
        spread(&mut p, 8, |_| 10);
        assert_eq!(p.iter().map(|p| p.workers).collect::<Vec<_>>(), [4, 1, 3]);
        let mut p = plans(&[100, 100]);
        spread(&mut p, 8, |p| if p.name == "d0" { 2 } else { 50 });
        assert_eq!(p.iter().map(|p| p.workers).collect::<Vec<_>>(), [2, 6]);
        let mut p = plans(&[100, 100, 100]);
        spread(&mut p, 2, |_| 10);
        assert_eq!(
            p.iter().map(|p| p.workers).collect::<Vec<_>>(),
            [1, 1, 1],
            "at least one each"
        );
    }

    #[test]
    fn exit_codes_combine() {
        assert_eq!(combine([0, 0]), 0);
        assert_eq!(combine([3, 3]), 3);
        assert_eq!(combine([0, 3]), 1);
        assert_eq!(combine([1, 130]), 130);
        assert_eq!(combine([]), 0);
    }
}
