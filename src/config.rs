/*!
Plain configuration the engine takes: no clap here. The CLI converts its flags into a
[`RunConfig`] once; applications build one directly.
*/

use crate::database::DatabaseUrl;
use crate::harness::Settings;
use crate::tenant::SchemaName;
use std::path::PathBuf;
use std::time::Duration;

/// Where the migrations come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationSource {
    /// The set compiled into the binary.
    Embedded,
    /// A directory read at run time.
    Directory(PathBuf),
}

/// Where the tenant names come from (exactly one per run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantSource {
    /// Names given directly.
    List(Vec<String>),
    /// A file with one name per line (`#` comments, blank lines ignored); `-` is stdin.
    File(PathBuf),
    /// A query returning one text column, run in a read-only transaction.
    Query(String),
    /// A SQL `LIKE` pattern over existing schemas.
    Pattern(String),
}

/// What to do with a listed tenant whose schema does not exist.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MissingPolicy {
    /// Report it as a failed tenant.
    #[default]
    Error,
    /// Report it as skipped.
    Skip,
    /// Create the schema, then migrate it.
    Create,
}

/// How far `down` goes.
#[derive(Debug, Clone, PartialEq, Eq)]
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
pub enum Command {
    /// Apply pending migrations, up to and including `to` when given.
    Up {
        /// Stop at this version.
        to: Option<String>,
    },
    /// Revert applied migrations.
    Down(DownTarget),
    /// Revert the newest N migrations, then apply them again.
    Redo {
        /// How many.
        steps: usize,
    },
    /// Read every tenant's state; change nothing.
    Status,
}

impl Command {
    /// The command's name in reports.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Up { .. } => "up",
            Command::Down(_) => "down",
            Command::Redo { .. } => "redo",
            Command::Status => "status",
        }
    }
}

/// Shared-schema migrations (run before any tenant by `up`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedConfig {
    /// The shared schema (default `public`).
    pub schema: SchemaName,
    /// Its migrations, if there are any.
    pub migrations: Option<MigrationSource>,
    /// Whether `down`/`redo` touch the shared set (never by default).
    pub include_in_down: bool,
}

/// Everything a fleet run needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The database.
    pub database_url: DatabaseUrl,
    /// The tenant migrations.
    pub migrations: MigrationSource,
    /// Where tenant names come from.
    pub tenants: TenantSource,
    /// Only these tenants (empty: all).
    pub only: Vec<String>,
    /// Never these tenants.
    pub exclude: Vec<String>,
    /// Fail the run when a discovered name is invalid (instead of skipping it).
    pub strict: bool,
    /// Listed tenants whose schema is missing.
    pub missing: MissingPolicy,
    /// Worker threads, and pool connections.
    pub concurrency: usize,
    /// Connection timeout.
    pub connect_timeout: Duration,
    /// `search_path` suffix and `lock_timeout` for migrations.
    pub settings: Settings,
    /// Stop starting tenants after the first failure.
    pub fail_fast: bool,
    /// The shared schema and its migrations.
    pub shared: SharedConfig,
}

impl RunConfig {
    /// A configuration with defaults: embedded migrations, concurrency 4, 10 s connect
    /// timeout, `search_path = <tenant>, public`, public as the shared schema.
    pub fn new(database_url: &str, tenants: TenantSource) -> RunConfig {
        let connect_timeout = Duration::from_secs(10);
        RunConfig {
            database_url: DatabaseUrl::new(database_url, connect_timeout),
            migrations: MigrationSource::Embedded,
            tenants,
            only: Vec::new(),
            exclude: Vec::new(),
            strict: false,
            missing: MissingPolicy::Error,
            concurrency: DEFAULT_CONCURRENCY,
            connect_timeout,
            settings: Settings {
                search_path_suffix: vec![SchemaName::shared("public").expect("valid")],
                lock_timeout: None,
            },
            fail_fast: false,
            shared: SharedConfig {
                schema: SchemaName::shared("public").expect("valid"),
                migrations: None,
                include_in_down: false,
            },
        }
    }
}

/// Default worker count. Measured with `bench/run.sh` on 2 cores (fresh apply of 1,000
/// tenants, ratio to one psql session): 1 worker 1.13×, 2 → 0.65×, 4 → 0.58×, 8 → 0.62×
/// (README, "Performance").
pub const DEFAULT_CONCURRENCY: usize = 4;
