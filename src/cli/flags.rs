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
  2  usage, configuration or migration-set error, or a fleet-wide down/redo or a tenant drop
     not confirmed (no --yes while stdin is not a terminal): nothing was changed
  3  the database could not be reached, or was lost during the run
  4  status --check: a tenant is behind
  5  status --check: a tenant has versions this set does not know
  6  status --check: an applied migration's up.sql changed since it was applied
  130, 143  interrupted by SIGINT, SIGTERM (tenants in flight rolled back, the rest not started)
  With --fleet: the code every database agrees on, else 1 (130/143 when interrupted).

Environment: DATABASE_URL, TENANTS, TENANTS_QUERY, TENANT_SCHEMA_PATTERN, MIGRATION_DIRECTORY,
SHARED_MIGRATION_DIRECTORY, DIESEL_CONFIG_FILE, MIGRATE_TENANTS_CONCURRENCY, MIGRATE_TENANTS_FLEET,
MIGRATE_TENANTS_CITUS, MIGRATE_TENANTS_SESSION_SQL, MIGRATE_TENANTS_JOURNAL_SCHEMA,
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

    /// Fleet file: several databases, each with its URL variable and tenant source (README,
    /// "Several databases"). Never looked for: only this flag or its variable names it.
    #[arg(long, env = "MIGRATE_TENANTS_FLEET", global = true, value_name = "FILE")]
    pub fleet: Option<PathBuf>,

    /// With --fleet: only this database of the fleet file (repeatable).
    #[arg(long = "database", global = true, value_name = "NAME")]
    pub databases: Vec<String>,

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

    /// Schema of the run journal (what each up, down, redo, tenant create/drop did; created
    /// on first use).
    #[arg(long, global = true, env = "MIGRATE_TENANTS_JOURNAL_SCHEMA", default_value = crate::DEFAULT_JOURNAL_SCHEMA,
        value_name = "SCHEMA")]
    pub journal_schema: String,

    /// Write no run journal (diesel's history tables are kept either way; `runs`, `up --resume`
    /// and `down --run` then have nothing to read for this run).
    #[arg(long, global = true)]
    pub no_journal: bool,
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
    /// One JSON object per line: one per tenant as it finishes, then a summary object.
    JsonLines,
}

/// Plans before changes (up, down, redo, tenant create, tenant drop).
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct PlanArgs {
    /// Change nothing: read each tenant's state and print the plan (migrations in order,
    /// transactional or not, irreversible ones named).
    #[arg(long)]
    pub dry_run: bool,
    /// Print the exact SQL the run would send to each tenant, search_path included, as a
    /// psql script on stdout (the plan goes to stderr); implies --dry-run.
    #[arg(long)]
    pub sql: bool,
}

impl PlanArgs {
    /// Whether the command only plans.
    pub fn planning(&self) -> bool {
        self.dry_run || self.sql
    }
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
        /// Run again only the tenants that journaled up run ID (default: the latest) failed,
        /// skipped or never reached. Tenants come from the journal (--tenant/--exclude narrow them).
        #[arg(long, value_name = "ID", num_args = 0..=1, default_missing_value = "latest",
            value_parser = parse_run)]
        resume: Option<RunRef>,
        /// Only the tenants the resumed run (--resume ID, else the latest up run) left failed.
        #[arg(long)]
        only_failed: bool,
        /// Migrate these tenants first: a number N (the first N selected tenants, in name
        /// order) or a comma list of names. The rest starts only if every canary succeeded;
        /// otherwise the run stops with exit code 1 and the rest untouched.
        #[arg(long, value_name = "N|NAMES")]
        canary: Option<String>,
        /// Apply a pending migration older than the tenant's newest applied one (by default
        /// such a tenant fails, naming both, and is left untouched).
        #[arg(long)]
        allow_out_of_order: bool,
        #[command(flatten)]
        plan: PlanArgs,
    },
    /// Revert the newest applied migration(s) of each tenant.
    Down {
        /// How many migrations to revert per tenant (refused over tenants at different
        /// versions unless --yes: the same N would revert different migrations on each).
        #[arg(long, default_value_t = 1, conflicts_with_all = ["to", "all", "run"])]
        steps: usize,
        /// Revert exactly what journaled run ID applied, on each tenant it changed (newest
        /// first; with the journal's down.sql where this binary lacks a migration). Tenants come
        /// from the journal (--tenant/--exclude narrow them).
        #[arg(long, value_name = "ID", conflicts_with_all = ["to", "all", "shared"])]
        run: Option<i64>,
        /// With --run: revert even where later migrations sit on top.
        #[arg(long, requires = "run")]
        force: bool,
        /// Revert every migration newer than this version.
        #[arg(long, value_name = "VERSION", conflicts_with = "all")]
        to: Option<String>,
        /// Revert every migration.
        #[arg(long)]
        all: bool,
        /// Also revert the shared schema's newest migration(s) (after the tenants' plan is checked).
        #[arg(long)]
        shared: bool,
        /// Do not ask: needed when stdin is not a terminal and more than one tenant is selected;
        /// also confirms a --steps revert over tenants at different versions.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        plan: PlanArgs,
    },
    /// Revert the newest N migrations of each tenant, then apply them again.
    Redo {
        /// How many of the newest migrations to revert and apply again, per tenant.
        #[arg(long, default_value_t = 1)]
        steps: usize,
        /// Do not ask: needed when stdin is not a terminal and more than one tenant is selected.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        plan: PlanArgs,
    },
    /// Show each tenant's version, applied and pending counts, and unknown versions.
    Status {
        /// A deploy gate: exit 0 only when every tenant (and the shared schema) has every
        /// migration and no unknown version; else 1 (a tenant failed or is missing), 5 (a
        /// tenant has versions this set does not know), 4 (a tenant is behind) or 6 (an
        /// applied migration's up.sql changed since it was applied).
        #[arg(long)]
        check: bool,
        /// List only the tenants that are not current (behind, ahead, failed, missing, or
        /// with an up.sql changed since applied); the fleet summary still counts all.
        #[arg(long)]
        behind_only: bool,
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
    /// Print a shell completion script (e.g. `completions bash > /etc/bash_completion.d/migrate-tenants`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Record a migration as applied or pending in the selected tenants' history without
    /// running it (baseline a schema built by hand, repair a history), journaled.
    #[command(subcommand)]
    Mark(MarkCommand),
    /// Recent runs from the run journal (id, when, who, command, tenants ok/failed/skipped);
    /// `runs show ID` for one run's tenants and steps.
    Runs {
        #[command(subcommand)]
        show: Option<RunsCommand>,
        /// How many runs to list.
        #[arg(long, default_value_t = 20, value_name = "N")]
        limit: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum MarkCommand {
    /// Record VERSION as applied (refused where a table its up.sql creates does not exist).
    Applied {
        /// The migration's version (e.g. 2024-01-01-000003 or 20240101000003).
        version: String,
        /// Mark it even where its tables say otherwise.
        #[arg(long)]
        force: bool,
    },
    /// Record VERSION as not applied (refused where a table its up.sql creates exists).
    Pending {
        /// The migration's version.
        version: String,
        /// Mark it even where its tables say otherwise.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// One run: its tenants with outcomes, and every migration step.
    Show {
        /// The run's id (see `runs`).
        id: i64,
    },
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
        #[command(flatten)]
        plan: PlanArgs,
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
        #[command(flatten)]
        plan: PlanArgs,
    },
    /// Each discovered tenant with its version and pending count.
    List,
}

impl TenantCommand {
    /// The plan flags of `tenant create` and `tenant drop`.
    pub fn plan(&self) -> PlanArgs {
        match self {
            TenantCommand::Create { plan, .. } | TenantCommand::Drop { plan, .. } => *plan,
            TenantCommand::List => PlanArgs::default(),
        }
    }
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
            .journal(!self.no_journal)
            .journal_schema(&self.journal_schema)
            .journal_arguments(self.command_line())
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

impl Global {
    /// The command line as the journal shows it: the password of a URL given as an argument
    /// is hidden.
    fn command_line(&self) -> String {
        let line: Vec<String> = std::env::args().skip(1).collect();
        let line = line.join(" ");
        match self.database_url() {
            Ok(url) => url.scrub(&line),
            Err(_) => line,
        }
    }

    /// Whether a tenant source flag was given (selection flags aside).
    pub fn tenant_source_given(&self) -> bool {
        let t = &self.tenants;
        !t.tenants.is_empty()
            || t.tenants_file.is_some()
            || t.tenants_query.is_some()
            || t.schema_pattern.is_some()
            || t.all_tenants
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
    /// The plan flags of a command that has them.
    pub fn plan(&self) -> PlanArgs {
        match self {
            CliCommand::Up { plan, .. } | CliCommand::Down { plan, .. } | CliCommand::Redo { plan, .. } => *plan,
            CliCommand::Tenant(tenant) => tenant.plan(),
            _ => PlanArgs::default(),
        }
    }

    /// `up --canary`: a number is the first N tenants, anything else a list of names.
    pub fn canary(&self) -> Option<crate::Canary> {
        let CliCommand::Up { canary: Some(text), .. } = self else {
            return None;
        };
        Some(match text.trim().parse::<usize>() {
            Ok(n) => crate::Canary::First(n),
            Err(_) => crate::Canary::Tenants(text.split(',').map(|t| t.trim().to_string()).collect()),
        })
    }

    /// The library task for fleet commands.
    pub fn task(&self) -> Option<Task> {
        Some(match self {
            CliCommand::Up { to, .. } => Task::Up { to: to.clone() },
            CliCommand::Down {
                run: Some(run), force, ..
            } => Task::Rollback {
                run: *run,
                force: *force,
            },
            CliCommand::Down { steps, to, all, .. } => Task::Down(match (to, all) {
                (Some(v), _) => DownTarget::To(v.clone()),
                (None, true) => DownTarget::All,
                (None, false) => DownTarget::Steps(*steps),
            }),
            CliCommand::Redo { steps, .. } => Task::Redo { steps: *steps },
            CliCommand::Status { .. } => Task::Status,
            CliCommand::Mark(MarkCommand::Applied { version, force }) => Task::Mark {
                version: version.clone(),
                applied: true,
                force: *force,
            },
            CliCommand::Mark(MarkCommand::Pending { version, force }) => Task::Mark {
                version: version.clone(),
                applied: false,
                force: *force,
            },
            _ => return None,
        })
    }
}

/// A journaled run: by id, or the latest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunRef {
    /// The newest run of the kind needed.
    Latest,
    /// This run.
    Id(i64),
}

/// A run id, or `latest`.
fn parse_run(text: &str) -> Result<RunRef, String> {
    match text.trim() {
        "latest" => Ok(RunRef::Latest),
        id => id
            .parse::<i64>()
            .map(RunRef::Id)
            .map_err(|_| format!("{text:?}: expected a run id (see `runs`) or `latest`")),
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
