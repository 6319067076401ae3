/*!
Citus schema-based sharding: what changes when the database is a Citus coordinator.

Citus places each distributed schema (one per tenant) on one worker node and forwards the
DDL run in it. Three things differ from plain PostgreSQL, and only those are handled here:

- **How SQL is sent.** Citus rejects most DDL in a distributed schema sent as part of a
  multi-statement query string (`cannot insert multiple commands into a prepared
  statement`, citusdata/citus#6608), so a migration's transaction is sent one statement per
  query ([`execute_each`], split by the same lexer that validates the set). Everything the
  one-round-trip batch holds (search_path set LOCAL, the current_schema check, the
  transaction-id checks, the commit marker, the history row, the database-wide lock) is still
  sent, in the same order, inside the same transaction.
- **New tenant schemas** are created as distributed schemas
  (`citus.enable_schema_based_sharding` on for the `CREATE SCHEMA`, in its transaction), and
  the history table is created after it, so it belongs to the tenant's distributed schema.
- **Only the coordinator** holds the advisory locks every runner sees and forwards DDL to
  the workers: a run against a worker node is refused before anything changes.

Detection ([`resolve`]) is one query on the control connection, once per run. Plain
PostgreSQL keeps the single round trip per migration, which measured faster there.
*/

use crate::config::{RunConfig, Settings};
use crate::database::Database;
use crate::error::Error;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use diesel::sql_types::{Bool, Nullable, Text};
use migrate_tenants_set::sql_lexer::{for_each_statement, split_statements};

/// Whether a run treats the database as a Citus coordinator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum CitusMode {
    /// Citus mode when the `citus` extension is installed in the target database (one query
    /// per run); plain PostgreSQL otherwise.
    #[default]
    Auto,
    /// Citus mode whatever the catalog says: every migration statement by statement, new
    /// tenant schemas distributed (a no-op setting on plain PostgreSQL). A worker node is
    /// still refused.
    On,
    /// Plain PostgreSQL: no detection, each migration in one round trip.
    Off,
}

/// What a run does differently on Citus (both off on plain PostgreSQL).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CitusSettings {
    /// Send each migration's transaction one statement per query.
    pub(crate) statement_by_statement: bool,
    /// Create new schemas as distributed schemas (tenants; never the shared schema).
    pub(crate) distribute_schemas: bool,
}

impl CitusSettings {
    /// Citus mode for tenant schemas.
    pub(crate) fn on() -> CitusSettings {
        CitusSettings {
            statement_by_statement: true,
            distribute_schemas: true,
        }
    }
}

#[derive(QueryableByName)]
struct Detected {
    /// The installed Citus version, if the extension is in the database.
    #[diesel(sql_type = Nullable<Text>)]
    version: Option<String>,
    /// Whether this node is a worker (its group is not the coordinator's, 0).
    #[diesel(sql_type = Bool)]
    worker: bool,
}

/// What the database is, read once per run.
///
/// `pg_dist_local_group` is read through `query_to_xml` so that the same query runs on plain
/// PostgreSQL, where the table does not exist (`to_regclass` guards it).
const DETECT: &str = "SELECT (SELECT extversion::text FROM pg_extension WHERE extname = 'citus') AS version, \
     coalesce(CASE WHEN to_regclass('pg_catalog.pg_dist_local_group') IS NOT NULL THEN \
       (xpath('/row/worker/text()', query_to_xml( \
          'SELECT groupid <> 0 AS worker FROM pg_catalog.pg_dist_local_group', false, true, '')))[1]::text::boolean \
     END, false) AS worker";

/// Decides the run's Citus mode (one query on `conn`, none for [`CitusMode::Off`]) and
/// refuses a worker node: locks and DDL must go through the coordinator.
pub(crate) fn resolve(conn: &mut PgConnection, mode: CitusMode) -> Result<CitusSettings, Error> {
    if mode == CitusMode::Off {
        return Ok(CitusSettings::default());
    }
    let detected = diesel::sql_query(DETECT)
        .get_result::<Detected>(conn)
        .map_err(|e| Error::Database {
            context: "looking for the citus extension".into(),
            message: e.to_string(),
        })?;
    if detected.worker {
        return Err(Error::Config(format!(
            "this database is a Citus worker node (Citus {}): nothing was changed; run against the coordinator, \
             which forwards DDL to the workers and holds the advisory locks every runner must see",
            detected.version.as_deref().unwrap_or("?")
        )));
    }
    match (mode, detected.version) {
        (CitusMode::On, _) | (_, Some(_)) => Ok(CitusSettings::on()),
        _ => Ok(CitusSettings::default()),
    }
}

/// Once per run, on a connected database: resolves the Citus mode (refusing a worker node),
/// runs the session SQL on the control connection and hands it to the workers' pool, and
/// returns the settings migrations run with on this database.
pub(crate) fn prepare_database(db: &mut Database, config: &RunConfig) -> Result<Settings, Error> {
    let citus = resolve(&mut db.control, config.citus)?;
    if citus.statement_by_statement {
        log::info!("Citus mode: migrations run one statement per query; new tenant schemas are distributed");
    }
    if let Some(sql) = &config.settings.session_sql {
        apply_session_sql(&mut db.control, sql).map_err(|e| Error::Database {
            context: "running the session SQL".into(),
            message: e.to_string(),
        })?;
        db.workers.session_sql = Some(sql.clone());
    }
    Ok(Settings {
        citus,
        ..config.settings.clone()
    })
}

/// Checks SQL to run on every session (after connecting and after each session reset):
/// one or more statements the lexer can split, none of which controls the transaction or
/// changes `search_path` (the runner owns both).
pub(crate) fn validate_session_sql(sql: &str) -> Result<(), String> {
    let statements = split_statements(sql).map_err(|e| format!("session SQL: {e}"))?;
    if statements.is_empty() {
        return Err("session SQL is empty".into());
    }
    for statement in &statements {
        if let Some(why) = migrate_tenants_set::forbidden(statement) {
            let first = statement.text.lines().next().unwrap_or("");
            return Err(format!("session SQL `{first}` {why}"));
        }
    }
    Ok(())
}

/// Runs `sql` on `session` (after a connect or a session reset).
pub(crate) fn apply_session_sql(conn: &mut PgConnection, sql: &str) -> Result<(), DieselError> {
    conn.batch_execute(sql)
}

/// Sends `sql` one top-level statement per query, in order, stopping at the first failure.
/// The error comes with the character offset in `sql` where the failing statement starts
/// (PostgreSQL's error position is relative to the statement).
pub(crate) fn execute_each(conn: &mut PgConnection, sql: &str) -> Result<(), (DieselError, usize)> {
    let mut statements = Vec::new();
    if for_each_statement(sql, |s| statements.push(s.text)).is_err() {
        // Never for the runner's batches (the set was validated): let the server say why.
        return conn.batch_execute(sql).map_err(|e| (e, 0));
    }
    for text in statements {
        if let Err(e) = conn.batch_execute(text) {
            return Err((e, char_offset(sql, text)));
        }
    }
    Ok(())
}

#[derive(QueryableByName)]
struct Taken {
    #[diesel(sql_type = Bool)]
    taken: bool,
}

/// How often [`lock_by_polling`] asks for the lock again.
const POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// How [`lock_by_polling`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Polled {
    /// The lock is held.
    Taken,
    /// The deadline passed first.
    TimedOut,
    /// The run was interrupted first.
    Interrupted,
}

/// Takes the session advisory lock `key` by asking again until it is free, never by waiting
/// inside a statement: on Citus, a `CREATE INDEX CONCURRENTLY` waits for every open
/// transaction of the node, including a session blocked in `pg_advisory_lock`, so a runner
/// waiting that way for a lock held by the session running the build (or by one waiting
/// for it) deadlocks with it, across runners and unseen by any deadlock detector.
pub(crate) fn lock_by_polling(
    conn: &mut PgConnection,
    key: i64,
    deadline: Option<std::time::Instant>,
    interrupted: impl Fn() -> bool,
) -> Result<Polled, DieselError> {
    loop {
        let taken =
            diesel::sql_query(format!("SELECT pg_try_advisory_lock({key}) AS taken")).get_result::<Taken>(conn)?;
        if taken.taken {
            return Ok(Polled::Taken);
        }
        if interrupted() {
            return Ok(Polled::Interrupted);
        }
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            return Ok(Polled::TimedOut);
        }
        std::thread::sleep(POLL);
    }
}

/// The character offset of `part` (a slice of `whole`) in `whole`.
fn char_offset(whole: &str, part: &str) -> usize {
    let start = (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize);
    whole.get(..start).map_or(0, |before| before.chars().count())
}

/// `CREATE SCHEMA` as a distributed schema, in the caller's transaction:
/// `citus.enable_schema_based_sharding` is on for that statement only (its previous value is
/// put back, so schemas a migration creates are not distributed behind its back).
pub(crate) fn create_distributed_schema(quoted_schema: &str) -> String {
    format!(
        "SELECT set_config('migrate_tenants.sharding', \
           coalesce(current_setting('citus.enable_schema_based_sharding', true), 'off'), true);\n\
         SELECT set_config('citus.enable_schema_based_sharding', 'on', true);\n\
         CREATE SCHEMA IF NOT EXISTS {quoted_schema};\n\
         SELECT set_config('citus.enable_schema_based_sharding', current_setting('migrate_tenants.sharding'), true);\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_sql_is_checked_by_the_lexer() {
        assert!(validate_session_sql("SET citus.enable_unsafe_triggers = on").is_ok());
        assert!(validate_session_sql("SET a.b = 1; SET c.d = 'x;y'").is_ok());
        for bad in [
            "",
            "  -- nothing",
            "BEGIN",
            "SET x.y = 1; COMMIT",
            "SET search_path = a",
            "RESET ALL",
        ] {
            assert!(validate_session_sql(bad).is_err(), "{bad}");
        }
        assert!(validate_session_sql("SET x = 'unterminated").is_err());
    }

    #[test]
    fn offsets_count_characters() {
        let sql = "SELECT 'é';\nSELECT 2";
        let second = split_statements(sql).unwrap()[1].text;
        assert_eq!(char_offset(sql, second), 12);
    }
}
