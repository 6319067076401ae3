/*!
migrate-tenants: run diesel migrations once per tenant schema of a schema-per-tenant
PostgreSQL database.

An application embeds its migrations with [`embed_migrations!`] and runs them with a
[`Runner`], or gets the whole command line in one call with `cli::main` (feature `cli`, on by
default). The engine returns typed reports ([`FleetReport`]) and errors ([`Error`]); it never
prints or exits.

```no_run
use migrate_tenants::{EmbeddedMigrations, Runner, TenantSource};

pub const MIGRATIONS: EmbeddedMigrations = migrate_tenants::embed_migrations!("tests/fixtures/basic");

# fn main() -> Result<(), migrate_tenants::Error> {
let report = Runner::new(&MIGRATIONS)
    .database_url("postgres://app@localhost/app")
    .tenants(TenantSource::list(["acme", "globex"]))
    .up()?;
assert_eq!(report.summary.failed, 0);
# Ok(())
# }
```

Inside, one module per concern: `source` (embedded sets), `runner` (this builder), `fleet`
(the skeleton every run shares), `databases` (one fleet over several databases),
`migrate` and `lifecycle` (what runs on each tenant),
`tenant_run` and `harness` (one tenant on one connection: lock, bookkeeping, checks), `step_sql`
(the SQL the harness sends, built by pure functions), `journal` (what each run did, in the
database), `dry_run` (plans before changes, with that same SQL), `canary` (a few tenants first), `lint`
(multi-tenant hazards in a set, without a database),
`shared` (the shared schema), `catalog` (a whole fleet's state in a few queries), `citus`
(what changes on a Citus coordinator),
`discovery`, `plan`, `database`, `tenant`, `report`, `observer` and `error`; `tenant_pool` serves
tenants to the application ([`TenantPool`]).
*/

mod canary;
mod catalog;
mod citus;
#[cfg(feature = "cli")]
pub mod cli;
mod config;
mod control;
mod database;
mod databases;
mod discovery;
mod drift;
mod dry_run;
mod error;
mod fleet;
mod harness;
mod journal;
mod lifecycle;
mod lint;
mod mark;
mod migrate;
mod observer;
mod plan;
mod preflight;
mod report;
mod rollback;
mod runner;
mod shared;
mod snapshot;
mod source;
mod status;
mod step_sql;
mod tenant;
mod tenant_pool;
mod tenant_run;
mod verify;

pub use canary::Canary;
pub use citus::CitusMode;
pub use config::{
    DownTarget, MissingPolicy, TenantSource, DEFAULT_CONCURRENCY, DEFAULT_CONNECT_TIMEOUT, DEFAULT_LOCK_WAIT_TIMEOUT,
    DEFAULT_RETRIES,
};
pub use control::{CancelToken, StopReason};
pub use database::{Pool, Target, Unreachable};
pub use databases::{
    DatabaseReport, Databases, DatabasesError, DatabasesObserver, DatabasesReport, DatabasesSummary, DuplicateTenant,
    NamedDatabase,
};
pub use discovery::DiscoveryError;
pub use drift::{DriftReport, Drifted, VersionGroup};
pub use dry_run::{PlannedStep, StepAction, TenantPlan};
pub use error::{Blocked, Error, Refusal};
pub use journal::{checksum, journal_ddl, RunDetail, RunRecord, RunTenant, StepRecord, DEFAULT_JOURNAL_SCHEMA};
pub use lint::{lint, Finding, LintConfig, LintReport, Rule, Severity};
pub use migrate_tenants_macros::embed_migrations;
pub use migrate_tenants_set::{DownSql, Migration, MigrationSet, Origin, SetError};
pub use observer::Observer;
pub use plan::CommandError;
pub use report::{
    exit, FailureKind, FleetReport, LastRun, Outcome, RunInfo, RunKind, Summary, TenantReport, VersionCount,
};
pub use rollback::Resume;
pub use runner::{Migrations, Runner, Task};
pub use source::{EmbeddedMigrations, SetInfo};
pub use tenant::{NameError, SchemaName};
pub use tenant_pool::{TenantConnection, TenantPool, TenantPoolError};
pub use verify::{Problem, VerifyReport};

/// What the macro's expansion names; not part of the stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::source::{EmbeddedFiles, EmbeddedSet};
}
