/*!
Checks made once, before any tenant, for problems that would otherwise fail every tenant
the same way: a read-only server, a role that may not create schemas, fewer free
connections than workers. A refusal stops the run before anything changes (exit 2); a cap
is a warning in the report.
*/

use crate::config::{MissingPolicy, RunConfig};
use crate::database::Database;
use crate::error::Error;
use crate::report::RunKind;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Integer, Text};

#[derive(QueryableByName)]
struct ServerState {
    #[diesel(sql_type = Bool)]
    read_only: bool,
    #[diesel(sql_type = Bool)]
    may_create: bool,
    #[diesel(sql_type = Integer)]
    free_connections: i32,
    #[diesel(sql_type = Text)]
    role: String,
}

/// Refuses what would fail every tenant; caps the workers to the server's free connections.
/// Returns the warnings.
pub(crate) fn check(db: &mut Database, config: &RunConfig, kind: RunKind) -> Result<Vec<String>, Error> {
    let state = diesel::sql_query(
        "SELECT pg_is_in_recovery() OR current_setting('default_transaction_read_only') = 'on' AS read_only, \
         has_database_privilege(current_database(), 'CREATE') AS may_create, \
         (current_setting('max_connections')::int \
          - CASE WHEN (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN 0 \
                 ELSE current_setting('superuser_reserved_connections')::int END \
          - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'))::int AS free_connections, \
         current_user::text AS role",
    )
    .get_result::<ServerState>(&mut *db.control)
    .map_err(|e| Error::Database {
        context: "checking the server before the run".into(),
        message: e.to_string(),
    })?;
    let writes = !kind.reads_only() && !config.dry_run;
    if writes && state.read_only {
        return Err(Error::Config(
            "the server is read-only (a standby in recovery, or default_transaction_read_only is on): \
             nothing was changed; run against the primary"
                .into(),
        ));
    }
    let creates = kind == RunKind::TenantCreate
        || (config.missing == MissingPolicy::Create && matches!(kind, RunKind::Up | RunKind::Redo));
    if creates && !state.may_create {
        return Err(Error::Config(format!(
            "role {} may not create schemas in this database (it lacks the CREATE privilege on it): nothing was \
             changed; GRANT CREATE ON DATABASE ... TO {}, or create the schemas beforehand",
            state.role, state.role
        )));
    }
    let mut warnings = Vec::new();
    let free = usize::try_from(state.free_connections).unwrap_or(0);
    if db.workers.count > free.max(1) {
        warnings.push(format!(
            "the server has {free} free connection(s) for {} worker(s): running {} worker(s), leaving the rest to \
             the application",
            db.workers.count,
            (free / 2).max(1)
        ));
        db.workers.count = (free / 2).max(1);
    }
    Ok(warnings)
}
