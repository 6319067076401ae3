/*!
Command-line flags, and their conversion into the library's [`Runner`].

clap types live only here (the library never sees them). [`Global::configure`] turns what
the user typed into the runner's settings once, checking what clap cannot.
*/

use crate::database::DatabaseUrl;
use crate::{DownTarget, MissingPolicy, Runner, Task, TenantSource};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

const EXIT_CODES: &str = "\
Exit codes:
  0  success: every tenant is where it was asked to be
  1  at least one tenant (or the shared schema) failed; the others were still processed
     (unless --fail-fast)
  2  usage, configuration or migration-set error: nothing was changed
  3  the database could not be reached, or was lost during the run
  4  status --check: a tenant is behind
  5  status --check: a tenant has versions this set does not know
  130, 143  interrupted by SIGINT, SIGTERM (tenants in flight rolled back, the rest not started)

Environment: DATABASE_URL, TENANTS, TENANTS_QUERY, TENANT_SCHEMA_PATTERN, MIGRATION_DIRECTORY,
SHARED_MIGRATION_DIRECTORY, DIESEL_CONFIG_FILE, MIGRATE_TENANTS_CONCURRENCY, MIGRATE_TENANTS_CITUS,
MIGRATE_TENANTS_SESSION_SQL,
MIGRATE_TENANTS_LINT_ALLOW, RUST_LOG (logging;
quiet by default). A .env file in the current directory, or else the nearest parent directory
that has one, is loaded first; variables already set win over it.";

/// Run diesel migrations once per tenant schema of a schema-per-tenant PostgreSQL database.
#[derive(Debug, Parser)]
#[command(name = "migrate-tenants", version, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: CliCommand,
}

/// Flags accepted by every command.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// PostgreSQL connection URL (its password is never printed or logged).
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    /// Migrations directory [env: MIGRATION_DIRECTORY] (default: diesel.toml's
    /// [migrations_directory] dir, found like the diesel CLI does, else migrations/ in the
    /// project root). Not for binaries with embedded migrations.
    #[arg(long, global = true, value_name = "DIR")]
    pub migrations_dir: Option<PathBuf>,

    /// Worker threads (and pooled connections); each tenant holds one connection for its whole run.
    #[arg(long, env = "MIGRATE_TENANTS_CONCURRENCY",
        hide_env_values = true, global = true, default_value_t = crate::DEFAULT_CONCURRENCY, value_name = "N")]
    pub concurrency: usize,

    /// Seconds to wait for the database before giving up (exit code 3).
    #[arg(long, global = true, default_value_t = crate::DEFAULT_CONNECT_TIMEOUT.as_secs(), value_name = "SECS")]
    pub connect_timeout: u64,

    /// Schemas after the tenant's on search_path while it migrates (comma list; empty for none).
    #[arg(long, global = true, default_value = "public", value_name = "SCHEMAS")]
    pub search_path_suffix: String,

    /// lock_timeout for migration statements, in milliseconds: a DDL statement that waits
    /// longer for a table lock fails (and rolls back) instead of queueing the application
    /// behind it (default: the server's setting).
    #[arg(long, global = true, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=2_147_483_647))]
    pub lock_timeout: Option<u64>,

    /// statement_timeout for migration statements, in milliseconds (transactional migrations):
    /// a statement running longer fails and rolls back (default: the server's setting).
    #[arg(long, global = true, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=2_147_483_647))]
    pub statement_timeout: Option<u64>,

    /// Seconds a tenant waits for its lock while another runner migrates it; the holder is
    /// named (0: wait forever).
    #[arg(long, global = true, value_name = "SECS", default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(0..=2_147_483))]
    pub lock_wait_timeout: u64,

    /// New attempts at a tenant whose transactional migration rolled back on a lock timeout,
    /// deadlock, serialization failure or lost connection (backoff with jitter).
    #[arg(long, global = true, value_name = "N", default_value_t = crate::DEFAULT_RETRIES,
        value_parser = clap::value_parser!(u32).range(0..=10))]
    pub retries: u32,

    /// Stop starting new tenants after the first failure.
    #[arg(long, global = true)]
    pub fail_fast: bool,

    /// Stop starting new tenants after N failures.
    #[arg(long, global = true, value_name = "N", conflicts_with = "fail_fast",
        value_parser = clap::value_parser!(u64).range(1..))]
    pub max_failures: Option<u64>,

    /// Schema holding the shared migrations' history (tenant registry, extensions).
    #[arg(long, global = true, default_value = "public", value_name = "SCHEMA")]
    pub shared_schema: String,

    /// Shared-schema migrations directory [env: SHARED_MIGRATION_DIRECTORY] (default:
    /// migrations_shared/ beside the migrations directory, if it exists). Not for binaries
    /// with embedded migrations.
    #[arg(long, global = true, value_name = "DIR")]
    pub shared_migrations_dir: Option<PathBuf>,

    /// Citus schema-based sharding: auto (when the citus extension is installed), on
    /// (migrations statement by statement, new tenant schemas distributed) or off.
    #[arg(long, env = "MIGRATE_TENANTS_CITUS", global = true, value_enum, default_value_t = CitusFlag::Auto)]
    pub citus: CitusFlag,

    /// SQL run on every session after connecting and after each per-tenant session reset
    /// (e.g. "SET citus.enable_unsafe_triggers = on"); no transaction control, no search_path.
    #[arg(long, env = "MIGRATE_TENANTS_SESSION_SQL", global = true, value_name = "SQL")]
    pub session_sql: Option<String>,

    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Human)]
    pub format: Format,

    /// Print only failures and the summary.
    #[arg(long, short, global = true)]
    pub quiet: bool,

    /// More log lines on stderr: -v info, -vv debug (RUST_LOG wins when set).
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    // Last, so that the flags above keep the "Global options" heading in --help.
    #[command(flatten)]
    pub tenants: TenantArgs,
}

/// Which tenants a command is about: exactly one source, then selection.
#[derive(Debug, Args)]
#[command(next_help_heading = "Tenants (up, down, redo, status, tenant list)")]
pub struct TenantArgs {
    /// Tenant schemas, comma-separated [env: TENANTS].
    #[arg(long, global = true, value_delimiter = ',', value_name = "NAMES")]
    pub tenants: Vec<String>,

    /// File with one tenant per line (# comments and blank lines ignored; - reads stdin).
    #[arg(long, global = true, value_name = "PATH")]
    pub tenants_file: Option<PathBuf>,

    /// SQL query returning one text column of tenant names, run read-only [env: TENANTS_QUERY].
    #[arg(long, global = true, value_name = "SQL")]
    pub tenants_query: Option<String>,

    /// SQL LIKE pattern over existing schemas, e.g. 'tenant_%' (never pg_*, information_schema,
    /// public) [env: TENANT_SCHEMA_PATTERN].
    #[arg(long, global = true, value_name = "PATTERN")]
    pub schema_pattern: Option<String>,

    /// Every schema that holds a __diesel_schema_migrations table (except the shared schema).
    #[arg(long, global = true)]
    pub all_tenants: bool,

    /// Only this tenant (repeatable).
    #[arg(long = "tenant", global = true, value_name = "NAME")]
    pub only: Vec<String>,

    /// Never this tenant (repeatable).
    #[arg(long, global = true, value_name = "NAME")]
    pub exclude: Vec<String>,

    /// Only part I of N of the selected tenants (e.g. 2/4), by a stable hash of each name:
    /// N CI jobs or hosts migrate disjoint parts in parallel.
    #[arg(long, global = true, value_name = "I/N", value_parser = parse_shard)]
    pub shard: Option<(u32, u32)>,

    /// Fail the run when a discovered name is invalid, instead of skipping it.
    #[arg(long, global = true)]
    pub strict: bool,

    /// What to do with a tenant whose schema does not exist.
    #[arg(long, global = true, value_enum, default_value_t = Missing::Error)]
    pub missing: Missing,

    /// Same as --missing create.
    #[arg(long, global = true)]
    pub create_missing: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Missing {
    /// Report the tenant as failed.
    Error,
    /// Report the tenant as skipped.
    Skip,
    /// Create the schema and migrate it.
    Create,
}

/// `--citus`: whether the database is a Citus coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CitusFlag {
    /// Citus mode when the citus extension is installed.
    Auto,
    /// Citus mode.
    On,
    /// Plain PostgreSQL.
    Off,
}

impl From<CitusFlag> for crate::CitusMode {
    fn from(flag: CitusFlag) -> crate::CitusMode {
        match flag {
            CitusFlag::Auto => crate::CitusMode::Auto,
            CitusFlag::On => crate::CitusMode::On,
            CitusFlag::Off => crate::CitusMode::Off,
        }
    }
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One line per tenant and a summary.
    Human,
    /// One JSON document with every tenant's report.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Apply every pending migration to each tenant (shared-schema migrations first).
    Up {
        /// Stop after this version (e.g. 2024-01-01-000003 or 20240101000003).
        #[arg(long, value_name = "VERSION")]
        to: Option<String>,
        /// Apply each tenant's pending migrations in one transaction: a tenant ends at its old
        /// version or its new one (refused when one of them runs outside a transaction).
        #[arg(long)]
        atomic: bool,
    },
    /// Revert the newest applied migration(s) of each tenant.
    Down {
        /// How many migrations to revert per tenant.
        #[arg(long, default_value_t = 1, conflicts_with_all = ["to", "all"])]
        steps: usize,
        /// Revert every migration newer than this version.
        #[arg(long, value_name = "VERSION", conflicts_with = "all")]
        to: Option<String>,
        /// Revert every migration.
        #[arg(long)]
        all: bool,
        /// Also revert the shared schema's newest migration(s) (after the tenants' plan is checked).
        #[arg(long)]
        shared: bool,
    },
    /// Revert the newest N migrations of each tenant, then apply them again.
    Redo {
        /// How many of the newest migrations to revert and apply again, per tenant.
        #[arg(long, default_value_t = 1)]
        steps: usize,
    },
    /// Show each tenant's version, applied and pending counts, and unknown versions.
    Status {
        /// A deploy gate: exit 0 only when every tenant (and the shared schema) has every
        /// migration and no unknown version; else 1 (a tenant failed or is missing), 5 (a
        /// tenant has versions this set does not know) or 4 (a tenant is behind).
        #[arg(long)]
        check: bool,
    },
    /// List the migrations this binary runs (no database needed).
    List,
    /// Tenants whose structure differs from most tenants at the same version (read-only).
    Drift,
    /// Prove the tenant migrations on scratch schemas (never a tenant; all rolled back): every
    /// down.sql restores the schema, and the set changes nothing outside the tenant's schema.
    Verify {
        /// Start a throwaway local PostgreSQL for it (needs the server programs installed)
        /// instead of using --database-url.
        #[arg(long)]
        ephemeral: bool,
    },
    /// Find multi-tenant hazards in the tenant migrations (no database needed): extensions
    /// without SCHEMA, fixed schema names, public. references, empty down.sql files after a
    /// CREATE, database-wide statements, blocking indexes. Exit 1 on errors.
    Lint {
        /// Also exit 1 on warnings.
        #[arg(long)]
        deny_warnings: bool,
        /// Allow this rule everywhere (repeatable, or a comma list in the environment; in a file:
        /// `-- migrate-tenants: allow(rule-id)`).
        #[arg(
            long = "allow",
            value_name = "RULE",
            env = "MIGRATE_TENANTS_LINT_ALLOW",
            value_delimiter = ','
        )]
        allow: Vec<String>,
    },
    /// Create <migrations dir>/<YYYY-MM-DD-HHMMSS>_<name>/{up.sql,down.sql}.
    Generate {
        /// Migration name: [a-z0-9_]+.
        name: String,
        /// Write metadata.toml with run_in_transaction = false (for one CREATE INDEX CONCURRENTLY, ...).
        #[arg(long)]
        no_transaction: bool,
    },
    /// Create, drop or list tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create tenant schemas and apply every migration atomically (nothing is left on failure).
    Create {
        /// Schema names.
        #[arg(required = true)]
        names: Vec<String>,
        /// Accept (and migrate) schemas that already exist.
        #[arg(long)]
        if_not_exists: bool,
    },
    /// Drop tenant schemas (DROP SCHEMA ... CASCADE) under their lock.
    Drop {
        /// Schema names.
        #[arg(required = true)]
        names: Vec<String>,
        /// Confirm: this deletes the tenants' data.
        #[arg(long)]
        yes: bool,
        /// Also drop schemas without a __diesel_schema_migrations table.
        #[arg(long)]
        force: bool,
        /// Skip a schema that does not exist instead of failing it.
        #[arg(long)]
        if_exists: bool,
    },
    /// Each discovered tenant with its version and pending count.
    List,
}

/// A flag combination clap cannot check (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl Global {
    /// The database URL, or a usage error saying how to give one.
    pub fn database_url(&self) -> Result<DatabaseUrl, UsageError> {
        match &self.database_url {
            Some(url) if !url.trim().is_empty() => {
                DatabaseUrl::validate(url).map_err(UsageError)?;
                Ok(DatabaseUrl::new(url, Duration::from_secs(self.connect_timeout)))
            }
            _ => Err(UsageError(
                "no database: pass --database-url or set DATABASE_URL (a .env file works too)".into(),
            )),
        }
    }

    /// The runner with every global setting applied; `tenants` replaces the tenant flags
    /// (for commands that name their tenants).
    pub fn configure(&self, runner: Runner, tenants: Option<TenantSource>) -> Result<Runner, UsageError> {
        let url = self.database_url()?;
        Ok(self.settings(runner, tenants)?.database_url(url.expose()))
    }

    /// Every global setting but the database (for `verify --ephemeral`, whose database is a
    /// cluster of its own).
    pub fn settings(&self, runner: Runner, tenants: Option<TenantSource>) -> Result<Runner, UsageError> {
        if self.concurrency == 0 {
            return Err(UsageError(
                "--concurrency (MIGRATE_TENANTS_CONCURRENCY) must be at least 1".into(),
            ));
        }
        let source = match tenants {
            Some(source) => source,
            None => self.tenants.source()?,
        };
        let mut runner = runner
            .connect_timeout(Duration::from_secs(self.connect_timeout.max(1)))
            .tenants(source)
            .only(self.tenants.only.clone())
            .exclude(self.tenants.exclude.clone())
            .strict(self.tenants.strict)
            .missing(self.tenants.missing_policy())
            .concurrency(self.concurrency)
            .search_path_suffix(
                self.search_path_suffix
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty()),
            )
            .fail_fast(self.fail_fast)
            .retries(self.retries)
            .lock_wait_timeout(match self.lock_wait_timeout {
                0 => None,
                secs => Some(Duration::from_secs(secs)),
            })
            .shared_schema(&self.shared_schema)
            .citus(self.citus.into())
            .session_sql(self.session_sql.as_deref());
        if let Some(ms) = self.lock_timeout {
            runner = runner.lock_timeout(Duration::from_millis(ms));
        }
        if let Some(ms) = self.statement_timeout {
            runner = runner.statement_timeout(Duration::from_millis(ms));
        }
        if let Some((part, parts)) = self.tenants.shard {
            runner = runner.shard(part, parts);
        }
        if let Some(max) = self.max_failures {
            runner = runner.max_failures(Some(usize::try_from(max).unwrap_or(usize::MAX)));
        }
        Ok(runner)
    }
}

impl TenantArgs {
    /// Whether any tenant-source or selection flag was given (commands that name their
    /// tenants refuse them rather than ignore them).
    pub fn any_given(&self) -> bool {
        !self.tenants.is_empty()
            || self.tenants_file.is_some()
            || self.tenants_query.is_some()
            || self.schema_pattern.is_some()
            || self.all_tenants
            || !self.only.is_empty()
            || !self.exclude.is_empty()
    }

    /// Exactly one tenant source: from the flags if any is given (flags win over the
    /// environment), else from TENANTS, TENANTS_QUERY or TENANT_SCHEMA_PATTERN.
    fn source(&self) -> Result<TenantSource, UsageError> {
        let mut flags = Vec::new();
        if !self.tenants.is_empty() {
            flags.push((
                "--tenants",
                TenantSource::List(self.tenants.iter().map(|t| t.trim().to_string()).collect()),
            ));
        }
        if let Some(path) = &self.tenants_file {
            flags.push(("--tenants-file", TenantSource::File(path.clone())));
        }
        if let Some(sql) = &self.tenants_query {
            flags.push(("--tenants-query", TenantSource::Query(sql.clone())));
        }
        if let Some(pattern) = &self.schema_pattern {
            flags.push(("--schema-pattern", TenantSource::Pattern(pattern.clone())));
        }
        if self.all_tenants {
            flags.push(("--all-tenants", TenantSource::AllTenants));
        }
        if flags.is_empty() {
            flags = env_sources();
        }
        match flags.len() {
            1 => Ok(flags.pop().expect("one").1),
            0 => Err(UsageError(
                "no tenants: give exactly one of --tenants, --tenants-file, --tenants-query, --schema-pattern or --all-tenants \
                 (or TENANTS, TENANTS_QUERY or TENANT_SCHEMA_PATTERN in the environment or .env)"
                    .into(),
            )),
            _ => Err(UsageError(format!(
                "several tenant sources given ({}); give exactly one",
                flags.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    fn missing_policy(&self) -> MissingPolicy {
        match (self.create_missing, self.missing) {
            (true, _) | (_, Missing::Create) => MissingPolicy::Create,
            (_, Missing::Skip) => MissingPolicy::Skip,
            (_, Missing::Error) => MissingPolicy::Error,
        }
    }
}

impl CliCommand {
    /// The library task for fleet commands.
    pub fn task(&self) -> Option<Task> {
        Some(match self {
            CliCommand::Up { to, .. } => Task::Up { to: to.clone() },
            CliCommand::Down { steps, to, all, .. } => Task::Down(match (to, all) {
                (Some(v), _) => DownTarget::To(v.clone()),
                (None, true) => DownTarget::All,
                (None, false) => DownTarget::Steps(*steps),
            }),
            CliCommand::Redo { steps } => Task::Redo { steps: *steps },
            CliCommand::Status { .. } => Task::Status,
            _ => return None,
        })
    }
}

/// `I/N` with 1 <= I <= N.
fn parse_shard(text: &str) -> Result<(u32, u32), String> {
    let parsed = text
        .split_once('/')
        .and_then(|(i, n)| Some((i.trim().parse::<u32>().ok()?, n.trim().parse::<u32>().ok()?)));
    match parsed {
        Some((i, n)) if n >= 1 && (1..=n).contains(&i) => Ok((i, n)),
        _ => Err(format!("{text:?}: expected I/N with 1 <= I <= N, e.g. 2/4")),
    }
}

/// Tenant sources set in the environment (non-empty variables only).
fn env_sources() -> Vec<(&'static str, TenantSource)> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let mut sources = Vec::new();
    if let Some(list) = var("TENANTS") {
        sources.push((
            "TENANTS",
            TenantSource::List(list.split(',').map(|t| t.trim().to_string()).collect()),
        ));
    }
    if let Some(sql) = var("TENANTS_QUERY") {
        sources.push(("TENANTS_QUERY", TenantSource::Query(sql)));
    }
    if let Some(pattern) = var("TENANT_SCHEMA_PATTERN") {
        sources.push(("TENANT_SCHEMA_PATTERN", TenantSource::Pattern(pattern)));
    }
    sources
}
