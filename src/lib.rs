/*!
migrate-tenants: run diesel migrations once per tenant schema of a schema-per-tenant
PostgreSQL database.

The library is the engine; the `migrate-tenants` binary only parses flags and renders the
reports the engine returns. Nothing here prints or exits.

- [`tenant`]: validated schema names, quoting, advisory-lock keys.
- [`sql_lexer`] and [`migration_set`]: loading and validating diesel migration directories.
- [`database`]: the database URL (never shown with its password) and the connection pool.
- [`harness`]: one tenant's migrations on one connection: locking, bookkeeping, checks.
- [`catalog`]: the state of a whole fleet in a few set-based queries.
- [`discovery`]: which tenants a run is about.
- [`lifecycle`]: `tenant create` (atomic) and `tenant drop`.
- [`plan`]: which steps a command takes on a tenant.
- [`runner`]: the fleet runner: discovery, catalog pass, workers, reports.
- `tenant_run`: one tenant's run, from lock to report.
- `shared`: the shared schema's migrations, before (or after) the tenants.
- [`report`]: typed per-tenant and per-run reports, and the exit code they imply.
- [`generate`]: new migration directories in the diesel CLI's format.
*/

pub mod catalog;
pub mod config;
pub mod database;
pub mod discovery;
pub mod embedded;
pub mod generate;
pub mod harness;
pub mod lifecycle;
pub mod migration_set;
pub mod plan;
pub mod report;
pub mod runner;
mod shared;
pub mod sql_lexer;
pub mod tenant;
mod tenant_run;

pub use config::{Command, RunConfig};
pub use migration_set::{Migration, MigrationSet};
pub use report::{FleetReport, Outcome, RunKind, TenantReport};
pub use runner::run;
pub use tenant::SchemaName;
