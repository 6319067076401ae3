/*!
Why a run could not start, or stopped before reaching the tenants. A tenant's own failure is
not an error: it is in that tenant's report, and the run goes on.
*/

use crate::database::Unreachable;
use crate::discovery::DiscoveryError;
use crate::plan::CommandError;
use crate::report::exit;
use migrate_tenants_set::SetError;
use std::fmt;

/// A run that could not start, or stopped before reaching the tenants. Nothing was changed,
/// except where a variant says otherwise.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The migration set is invalid.
    #[error(transparent)]
    InvalidSet(#[from] SetError),
    /// The command does not fit the set (unknown version, zero steps, ...).
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The tenants could not be found, or a name is invalid.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// The database could not be reached.
    #[error(transparent)]
    Unreachable(#[from] Unreachable),
    /// Reverting would need migrations that have no `down.sql`.
    #[error("refusing to {command}: nothing was changed{}", blocked.iter().map(|b| format!("\n  - {b}")).collect::<String>())]
    Irreversible {
        /// `down` or `redo`.
        command: &'static str,
        /// Each blocking migration and the tenants that would need it.
        blocked: Vec<Blocked>,
    },
    /// The run journal could not be created or written before the run started.
    #[error("{0}")]
    Journal(String),
    /// The command was refused before anything changed.
    #[error("{message}")]
    Refused {
        /// Why, in general.
        refusal: Refusal,
        /// Why, with the tenants and versions concerned.
        message: String,
    },
    /// A run over several databases cannot start (a tenant in two databases, an unknown
    /// database name, ...); nothing was changed.
    #[error(transparent)]
    Databases(#[from] crate::databases::DatabasesError),
    /// The configuration cannot work (a pool too small, a tenant name used twice, ...).
    #[error("{0}")]
    Config(String),
    /// The run stopped after the shared schema's migrations were applied, before any tenant
    /// was touched (a tenants query that reads what they created found a problem).
    #[error("{0}\nnote: the shared schema's migrations had been applied before this; no tenant was touched")]
    AfterShared(Box<Error>),
    /// A fleet-wide query failed (the shared schema and tenants already done stay done).
    #[error("{context}: {message}")]
    Database {
        /// What the runner was doing.
        context: String,
        /// PostgreSQL's message.
        message: String,
    },
}

/// Why a command was refused before anything changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// `down` by a number of steps over tenants at different versions would revert
    /// different migrations on each.
    MixedVersions,
    /// Rolling back a run whose migrations later runs built on.
    BuiltUpon,
    /// The journal has no such run, or it is not of the right kind.
    NoSuchRun,
    /// Marking a migration would contradict the tenant's schema.
    Contradiction,
}

/// A migration without `down.sql` that a `down` or `redo` would have to revert.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Blocked {
    /// Its directory name (prefixed `shared ` for the shared schema's set).
    pub migration: String,
    /// The tenants that would need it reverted.
    pub tenants: Vec<String>,
}

impl Blocked {
    /// Adds `tenant` to the entry of `migration` in `blocked` (a new entry if needed).
    pub(crate) fn add(blocked: &mut Vec<Blocked>, migration: &str, tenant: String) {
        match blocked.iter_mut().find(|b| b.migration == migration) {
            Some(b) => b.tenants.push(tenant),
            None => blocked.push(Blocked {
                migration: migration.to_string(),
                tenants: vec![tenant],
            }),
        }
    }
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<&str> = self.tenants.iter().take(5).map(String::as_str).collect();
        let more = self.tenants.len().saturating_sub(shown.len());
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        write!(
            f,
            "{} has no down.sql (irreversible); needed on {} tenant(s): {}{more}",
            self.migration,
            self.tenants.len(),
            shown.join(", ")
        )
    }
}

impl Error {
    /// The process exit code for this error (see [`exit`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Unreachable(_) => exit::UNREACHABLE,
            Error::AfterShared(inner) => inner.exit_code(),
            Error::Database { .. } => exit::TENANT_FAILED,
            _ => exit::USAGE,
        }
    }
}
