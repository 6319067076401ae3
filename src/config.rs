/*!
Plain configuration the engine takes: no clap here. The [`Runner`](crate::Runner) builder
fills a [`RunConfig`]; the CLI converts its flags into the builder's calls once.
*/

use crate::database::Connector;
use crate::tenant::SchemaName;
use migrate_tenants_set::MigrationSet;
use std::path::PathBuf;
use std::time::Duration;

/// Where the tenant names come from (exactly one per run).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TenantSource {
    /// Names given directly. A name that is not a valid tenant name stops the run.
    List(Vec<String>),
    /// A file with one name per line (`#` comments, blank lines ignored); `-` is stdin.
    File(PathBuf),
    /// A query returning one text column, run in a read-only transaction.
    Query(String),
    /// A SQL `LIKE` pattern over existing schemas (never `pg_*`, `information_schema`, `public`).
    Pattern(String),
    /// Every schema holding a `__diesel_schema_migrations` table, except the shared schema
    /// (and never `pg_*`, `information_schema`, `public`).
    AllTenants,
}

impl TenantSource {
    /// A list of names.
    pub fn list<I, S>(names: I) -> TenantSource
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        TenantSource::List(names.into_iter().map(Into::into).collect())
    }
}

/// What to do with a listed tenant whose schema does not exist.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum MissingPolicy {
    /// Report it as a failed tenant.
    #[default]
    Error,
    /// Report it as skipped.
    Skip,
    /// Create the schema, then migrate it (`up` and `redo` only).
    Create,
}

/// How far `down` goes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DownTarget {
    /// Revert the newest N applied migrations.
    Steps(usize),
    /// Revert every applied migration newer than this version.
    To(String),
    /// Revert everything.
    All,
}

/// A fleet command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// Apply pending migrations, up to and including `to` when given.
    Up { to: Option<String> },
    /// Revert applied migrations.
    Down(DownTarget),
    /// Revert the newest N migrations, then apply them again.
    Redo { steps: usize },
    /// Read every tenant's state; change nothing.
    Status,
    /// Revert exactly what journaled run `run` applied and kept (`force`: even under later
    /// migrations).
    Rollback { run: i64, force: bool },
    /// Record `version` as applied (or pending) without running it (`force`: even when its
    /// tables say otherwise).
    Mark {
        version: String,
        applied: bool,
        force: bool,
    },
}

impl Command {
    /// The command's name in messages.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Command::Up { .. } => "up",
            Command::Down(_) => "down",
            Command::Redo { .. } => "redo",
            Command::Status => "status",
            Command::Rollback { .. } => "down",
            Command::Mark { .. } => "mark",
        }
    }
}

/// How migrations run on every tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Settings {
    /// Schemas after the tenant's on `search_path` (shared objects, extensions).
    pub(crate) search_path_suffix: Vec<SchemaName>,
    /// `lock_timeout` for migration statements (none: PostgreSQL's setting applies).
    pub(crate) lock_timeout: Option<Duration>,
    /// `statement_timeout` for migration statements (none: PostgreSQL's setting applies).
    pub(crate) statement_timeout: Option<Duration>,
    /// How long to wait for a tenant's advisory lock held by another runner (none: forever).
    pub(crate) lock_wait_timeout: Option<Duration>,
    /// Versions whose SQL touches database-wide objects (extensions, roles, ...): they run
    /// one tenant at a time, under a database-wide lock.
    pub(crate) database_wide: std::sync::Arc<std::collections::BTreeSet<String>>,
    /// The run's journal, once it has begun (steps are recorded with their history rows).
    pub(crate) journal: Option<crate::journal::JournalRun>,
    /// What the run does differently on Citus (resolved once per run when it connects).
    pub(crate) citus: crate::citus::CitusSettings,
    /// SQL run on every session after connecting and after each session reset.
    pub(crate) session_sql: Option<String>,
}

/// Statements that create or change objects shared by the whole database, which concurrent
/// tenants would race on (`CREATE EXTENSION IF NOT EXISTS` in two tenants at once fails on
/// a unique index).
const DATABASE_WIDE: &[&[&str]] = &[
    &["create", "extension"],
    &["alter", "extension"],
    &["drop", "extension"],
    &["comment", "on", "extension"],
    &["create", "role"],
    &["alter", "role"],
    &["drop", "role"],
    &["create", "user"],
    &["alter", "user"],
    &["drop", "user"],
    &["create", "group"],
    &["create", "publication"],
    &["alter", "publication"],
    &["drop", "publication"],
    &["create", "event"],
    &["alter", "event"],
    &["drop", "event"],
    &["create", "language"],
    &["create", "trusted"],
    &["create", "foreign", "data"],
    &["create", "server"],
    &["create", "tablespace"],
    &["create", "cast"],
];

/// The versions of `set` with a database-wide statement in `up.sql` or `down.sql` (found
/// by the lexer).
pub(crate) fn database_wide_versions(set: &migrate_tenants_set::MigrationSet) -> std::collections::BTreeSet<String> {
    use migrate_tenants_set::sql_lexer::split_statements;
    let wide = |sql: &str| {
        split_statements(sql).is_ok_and(|statements| {
            statements
                .iter()
                .any(|st| DATABASE_WIDE.iter().any(|p| st.starts_with(p)))
        })
    };
    set.migrations()
        .iter()
        .filter(|m| wide(&m.up) || matches!(&m.down, migrate_tenants_set::DownSql::Sql(d) if wide(d)))
        .map(|m| m.version.clone())
        .collect()
}

/// The shared schema and its migrations (run before any tenant by `up`).
#[derive(Debug, Clone)]
pub(crate) struct SharedConfig {
    /// The shared schema (default `public`).
    pub(crate) schema: SchemaName,
    /// Its migrations, if there are any.
    pub(crate) migrations: Option<MigrationSet>,
    /// Whether `down`/`redo` touch the shared set (never by default).
    pub(crate) include_in_down: bool,
}

/// Everything a fleet run needs.
#[derive(Debug, Clone)]
pub(crate) struct RunConfig {
    pub(crate) connector: Connector,
    /// The tenant migrations.
    pub(crate) migrations: MigrationSet,
    pub(crate) tenants: TenantSource,
    /// Only these tenants (empty: all).
    pub(crate) only: Vec<String>,
    /// Never these tenants.
    pub(crate) exclude: Vec<String>,
    /// Fail the run when a discovered name is invalid (instead of skipping it).
    pub(crate) strict: bool,
    /// Only part `i` of `n` of the selected tenants.
    pub(crate) shard: Option<(u32, u32)>,
    pub(crate) missing: MissingPolicy,
    /// Worker threads, and pool connections.
    pub(crate) concurrency: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) settings: Settings,
    /// Stop starting tenants after this many failures (`Some(1)`: fail fast).
    pub(crate) max_failures: Option<usize>,
    /// New attempts at a tenant whose migration rolled back for a passing reason.
    pub(crate) retries: u32,
    /// `up`: all of a tenant's pending migrations in one transaction.
    pub(crate) atomic: bool,
    /// Stops the run when cancelled.
    pub(crate) cancel: Option<crate::control::CancelToken>,
    pub(crate) shared: SharedConfig,
    /// Where changing runs write their journal (`None`: no journal).
    pub(crate) journal: Option<crate::journal::JournalConfig>,
    /// Where the journal is read (`runs`, resume, rollback, checksums), written or not.
    pub(crate) journal_schema: SchemaName,
    /// `up` runs again the tenants a journaled run did not finish (`true`: failed ones only).
    pub(crate) resume: Option<(crate::rollback::Resume, bool)>,
    /// `down --steps` may run over tenants at different versions.
    pub(crate) allow_mixed_versions: bool,
    /// Plan only: change nothing in the database (no history table, schema or journal row
    /// either), report what would be done.
    pub(crate) dry_run: bool,
    /// With `dry_run`: also build the SQL each tenant would be sent.
    pub(crate) dry_run_sql: bool,
    /// `up` applies a pending migration older than the tenant's newest applied one.
    pub(crate) allow_out_of_order: bool,
    /// `up`: these tenants first; the rest only if every one of them succeeded.
    pub(crate) canary: Option<crate::canary::Canary>,
    /// Whether to treat the database as a Citus coordinator.
    pub(crate) citus: crate::citus::CitusMode,
}

/// Default worker count. Measured with `bench/run.sh` on 2 cores (fresh apply of 1,000
/// tenants, ratio to one psql session): 1 worker 1.13×, 2 → 0.65×, 4 → 0.58×, 8 → 0.62×
/// (README, "Performance").
pub const DEFAULT_CONCURRENCY: usize = 4;

/// Default time to wait for the database before giving up.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default time to wait for a tenant's lock held by another runner.
pub const DEFAULT_LOCK_WAIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Default number of new attempts at a tenant after a passing failure.
pub const DEFAULT_RETRIES: u32 = 2;
