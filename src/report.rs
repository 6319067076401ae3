/*!
Typed results: what happened to each tenant, and to the whole run.

The engine returns these; renderers (human or JSON) turn them into text, and the exit code
is computed from them in one place ([`FleetReport::exit_code`]).
*/

use crate::control::StopReason;
use crate::database::Target;
use crate::harness::HarnessError;
use crate::source::SetInfo;
use crate::tenant::SchemaName;
use serde::Serialize;
use std::time::Duration;

/// Process exit codes (documented in the README and `--help`).
pub mod exit {
    /// Every tenant succeeded.
    pub const SUCCESS: i32 = 0;
    /// At least one tenant (or the shared schema) failed.
    pub const TENANT_FAILED: i32 = 1;
    /// Usage, configuration or migration-set error: nothing was touched.
    pub const USAGE: i32 = 2;
    /// The database could not be reached, or was lost during the run.
    pub const UNREACHABLE: i32 = 3;
    /// The run was interrupted (SIGINT, or a cancelled token); the CLI exits 143 for SIGTERM.
    pub const INTERRUPTED: i32 = 130;
    /// SIGTERM.
    pub const TERMINATED: i32 = 143;
    /// `status --check`: a tenant lacks migrations of this set.
    pub const BEHIND: i32 = 4;
    /// `status --check`: a tenant has versions this set does not know.
    pub const AHEAD: i32 = 5;
    /// `status --check`: an applied migration's `up.sql` changed since it was applied.
    pub const CHANGED: i32 = 6;
}

/// What happened to one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// Nothing to do (or `status`: just read).
    Unchanged,
    /// Migrations were applied and/or reverted.
    Changed,
    /// Work stopped at a failure; `version_after` is the last good version.
    Failed {
        /// What kind of failure.
        failure: FailureKind,
        /// Directory name of the migration that failed, if one did.
        migration: Option<String>,
        /// What went wrong, with PostgreSQL's message.
        error: String,
    },
    /// Not attempted.
    Skipped {
        /// Why (`--fail-fast`, missing schema with `--missing skip`, ...).
        reason: String,
    },
}

/// Why a tenant failed, for callers that react to the kind (the CLI adds its hints by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureKind {
    /// A migration's SQL (or its revert) failed.
    Migration,
    /// No connection could be had for the tenant.
    Connection,
    /// Locking, bookkeeping or another query outside the migrations failed.
    Database,
    /// A needed migration has no `down.sql`.
    Irreversible,
    /// The tenant's history holds a version the set does not know.
    UnknownVersion,
    /// The schema does not exist.
    MissingSchema,
    /// `up` would apply a migration older than the tenant's newest applied one.
    OutOfOrder,
    /// `tenant create`: the schema already exists.
    SchemaExists,
    /// `tenant drop`: the schema has no history table, so it is not a tenant.
    NotATenant,
    /// Another runner held the tenant's lock for the whole lock wait timeout.
    LockWait,
    /// The connection to the server broke.
    ConnectionLost,
    /// The run was interrupted while the tenant was being migrated.
    Interrupted,
    /// The runner itself failed (a bug: please report it).
    Internal,
}

impl From<&HarnessError> for Outcome {
    fn from(error: &HarnessError) -> Outcome {
        let failure = match error {
            HarnessError::Migration { .. } => FailureKind::Migration,
            HarnessError::Connection(_) => FailureKind::Connection,
            HarnessError::Database(_) => FailureKind::Database,
            HarnessError::Irreversible(_) => FailureKind::Irreversible,
            HarnessError::UnknownVersion(_) => FailureKind::UnknownVersion,
            HarnessError::MissingSchema(_) => FailureKind::MissingSchema,
            HarnessError::OutOfOrder { .. } => FailureKind::OutOfOrder,
            HarnessError::SchemaExists(_) => FailureKind::SchemaExists,
            HarnessError::NotATenant(_) => FailureKind::NotATenant,
            HarnessError::LockWait(_) => FailureKind::LockWait,
            HarnessError::ConnectionLost(_) => FailureKind::ConnectionLost,
            HarnessError::Interrupted(_) => FailureKind::Interrupted,
        };
        Outcome::Failed {
            failure,
            migration: error.migration().map(str::to_string),
            error: error.to_string(),
        }
    }
}

/// The report of one tenant (or of the shared schema).
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct TenantReport {
    /// The schema.
    pub schema: SchemaName,
    /// What happened.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Whether the schema exists (after the run).
    pub exists: bool,
    /// Newest applied version before the run.
    pub version_before: Option<String>,
    /// Newest applied version after the run.
    pub version_after: Option<String>,
    /// Versions applied by this run, in order.
    pub applied: Vec<String>,
    /// Versions reverted by this run, in order.
    pub reverted: Vec<String>,
    /// History rows after the run.
    pub applied_count: usize,
    /// Known migrations not applied after the run.
    pub pending_count: usize,
    /// Applied versions this binary does not know.
    pub unknown: Vec<String>,
    /// Versions of this set not applied (the pending migrations), oldest first.
    pub pending: Vec<String>,
    /// Applied versions whose `up.sql` differs from the one the run journal recorded when it
    /// was applied (edited after it shipped); read by `status`.
    pub changed_since_applied: Vec<String>,
    /// Things worth saying that are not errors (no-op `down.sql`, schema created, a retry, ...).
    pub notes: Vec<String>,
    /// New attempts made after a passing failure (a lock timeout, a deadlock, ...).
    pub retries: u32,
    /// Wall time spent on this tenant, in milliseconds.
    pub elapsed_ms: u64,
    /// `up --to`: the target this tenant is already past (its newest applied migration is
    /// newer), as the migration's directory name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub past_target: Option<String>,
    /// A dry run: what the real run would do on this tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<crate::dry_run::TenantPlan>,
}

impl TenantReport {
    /// An empty report for `schema` with `outcome`.
    pub(crate) fn new(schema: SchemaName, outcome: Outcome) -> TenantReport {
        TenantReport {
            schema,
            outcome,
            exists: true,
            version_before: None,
            version_after: None,
            applied: Vec::new(),
            reverted: Vec::new(),
            applied_count: 0,
            pending_count: 0,
            unknown: Vec::new(),
            pending: Vec::new(),
            changed_since_applied: Vec::new(),
            notes: Vec::new(),
            retries: 0,
            elapsed_ms: 0,
            past_target: None,
            plan: None,
        }
    }

    /// Whether this tenant failed.
    pub fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Failed { .. })
    }

    /// Whether this tenant was not attempted.
    pub fn skipped(&self) -> bool {
        matches!(self.outcome, Outcome::Skipped { .. })
    }

    /// Sets the elapsed time.
    pub(crate) fn took(mut self, elapsed: Duration) -> TenantReport {
        self.elapsed_ms = elapsed.as_millis().min(u64::MAX as u128) as u64;
        self
    }
}

/// How many tenants are at one version (`status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct VersionCount {
    /// The newest applied version (`None`: nothing applied).
    pub version: Option<String>,
    /// Its directory name, when this set knows it.
    pub name: Option<String>,
    /// Tenants at it.
    pub tenants: usize,
}

/// The newest journaled `up` run, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LastRun {
    /// Its id.
    pub id: i64,
    /// How it ended (`None`: running, or it died).
    pub outcome: Option<String>,
    /// The tenants it left failed.
    pub failed: Vec<String>,
}

/// What a run did (names the command in reports and output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum RunKind {
    /// `up`
    #[serde(rename = "up")]
    Up,
    /// `down`
    #[serde(rename = "down")]
    Down,
    /// `redo`
    #[serde(rename = "redo")]
    Redo,
    /// `status`
    #[serde(rename = "status")]
    Status,
    /// `tenant create`
    #[serde(rename = "tenant create")]
    TenantCreate,
    /// `tenant drop`
    #[serde(rename = "tenant drop")]
    TenantDrop,
    /// `tenant list` (a `status` shown as a list of tenants)
    #[serde(rename = "tenant list")]
    TenantList,
    /// `mark applied|pending`
    #[serde(rename = "mark")]
    Mark,
}

impl RunKind {
    /// The command as typed.
    pub fn name(self) -> &'static str {
        match self {
            RunKind::Up => "up",
            RunKind::Down => "down",
            RunKind::Redo => "redo",
            RunKind::Status => "status",
            RunKind::TenantCreate => "tenant create",
            RunKind::TenantDrop => "tenant drop",
            RunKind::TenantList => "tenant list",
            RunKind::Mark => "mark",
        }
    }

    /// Whether the run only reads.
    pub fn reads_only(self) -> bool {
        matches!(self, RunKind::Status | RunKind::TenantList)
    }
}

/// Counts over a run's tenants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Summary {
    /// Tenants in the run.
    pub tenants: usize,
    /// Tenants changed.
    pub changed: usize,
    /// Tenants with nothing to do.
    pub unchanged: usize,
    /// Tenants that failed.
    pub failed: usize,
    /// Tenants not attempted.
    pub skipped: usize,
    /// Migrations applied in all (shared schema included).
    pub applied: usize,
    /// Migrations reverted in all (shared schema included).
    pub reverted: usize,
}

impl Summary {
    /// Adds one tenant's report.
    pub(crate) fn add(&mut self, report: &TenantReport) {
        self.tenants += 1;
        match report.outcome {
            Outcome::Unchanged => self.unchanged += 1,
            Outcome::Changed => self.changed += 1,
            Outcome::Failed { .. } => self.failed += 1,
            Outcome::Skipped { .. } => self.skipped += 1,
        }
        self.applied += report.applied.len();
        self.reverted += report.reverted.len();
    }
}

/// What a run runs and where: the first thing it says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RunInfo {
    /// The command.
    pub command: RunKind,
    /// The tenant migrations.
    pub source: SetInfo,
    /// The shared schema's migrations, when the run includes them.
    pub shared_source: Option<SetInfo>,
    /// The database (never the password).
    pub target: Target,
}

/// The report of a whole run.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct FleetReport {
    /// The command, the migrations and the database.
    #[serde(flatten)]
    pub run: RunInfo,
    /// The shared schema's report, when shared migrations were part of the run.
    pub shared: Option<TenantReport>,
    /// One report per tenant, in tenant order.
    pub tenants: Vec<TenantReport>,
    /// Discovered names refused as tenant names (never executed).
    pub invalid_names: Vec<String>,
    /// Why the run stopped starting tenants before the end, if it did.
    pub stopped: Option<StopReason>,
    /// Problems found once for the whole run that did not stop it (e.g. the concurrency was
    /// capped to the server's free connections).
    pub warnings: Vec<String>,
    /// Counts.
    pub summary: Summary,
    /// The run's id in the run journal (`None`: a run that only reads, or without journal).
    pub run_id: Option<i64>,
    /// `status`: how many tenants are at each newest version, newest version first.
    pub versions: Vec<VersionCount>,
    /// `status`: the newest journaled `up` run, with the tenants it left failed.
    pub last_run: Option<LastRun>,
    /// Wall time of the run, in milliseconds.
    pub elapsed_ms: u64,
    /// A dry run: nothing was changed; outcomes say what the real run would do, and each
    /// tenant's `plan` how.
    pub dry_run: bool,
}

impl FleetReport {
    /// An empty report for a run.
    pub(crate) fn new(run: RunInfo) -> FleetReport {
        FleetReport {
            run,
            shared: None,
            tenants: Vec::new(),
            invalid_names: Vec::new(),
            stopped: None,
            warnings: Vec::new(),
            summary: Summary::default(),
            run_id: None,
            versions: Vec::new(),
            last_run: None,
            elapsed_ms: 0,
            dry_run: false,
        }
    }

    /// Adds the tenants' reports (sorted by schema), counts them and stamps the time.
    pub(crate) fn finish(mut self, mut tenants: Vec<TenantReport>, started: std::time::Instant) -> FleetReport {
        tenants.sort_by(|a, b| a.schema.cmp(&b.schema));
        for report in &tenants {
            self.summary.add(report);
        }
        if let Some(shared) = &self.shared {
            self.summary.applied += shared.applied.len();
            self.summary.reverted += shared.reverted.len();
        }
        self.tenants = tenants;
        self.elapsed_ms = started.elapsed().as_millis().min(u64::MAX as u128) as u64;
        self
    }

    /// The process exit code this report implies: 3 when the server was lost, 130 when the
    /// run was interrupted, 1 if anything failed, else 0.
    pub fn exit_code(&self) -> i32 {
        let shared_failed = self.shared.as_ref().is_some_and(TenantReport::failed);
        if self.stopped == Some(StopReason::ServerLost) {
            exit::UNREACHABLE
        } else if self.stopped == Some(StopReason::Interrupted) {
            exit::INTERRUPTED
        } else if shared_failed || self.summary.failed > 0 {
            exit::TENANT_FAILED
        } else {
            exit::SUCCESS
        }
    }
}
