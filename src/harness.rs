/*!
The per-tenant harness: one tenant's migrations on one pooled connection.

A [`TenantHarness`] exists only while it holds the tenant's session advisory lock. It
keeps diesel's bookkeeping (`__diesel_schema_migrations`, diesel's exact DDL) inside the
tenant's schema but always addresses it schema-qualified, and sends each migration as
one round trip:

```text
BEGIN;
SELECT set_config('search_path', '"acme", public', true);   -- SET LOCAL: gone at COMMIT
DO ... current_schema() must be 'acme' ...                 -- the schema exists and is usable
<up.sql>
DO ... search_path must be unchanged ...                    -- the migration did not move it
INSERT INTO "acme".__diesel_schema_migrations (version) VALUES ('...');
COMMIT;
```

A failure anywhere rolls the whole migration back. Migrations with
`run_in_transaction = false` run their single statement alone, between a session-level
`set_config` and a `RESET search_path`. Releasing the harness resets `search_path` and
unlocks; if that cannot be done the connection is marked unclean and the pool closes it
instead of handing it to the next tenant.

On Citus ([`crate::citus`]) the same batches are sent one statement per query, new schemas
are distributed, and lock waits ask again instead of blocking in a statement.
*/

use crate::citus::{self, CitusSettings};
use crate::config::Settings;
use crate::control::RunControl;
use crate::database::mark_broken;
use crate::journal::{JournalRun, StepKind};
use crate::step_sql::{self, StepSql};
use crate::tenant::{quote_literal, SchemaName};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use diesel::sql_types::{BigInt, Bool, Text};
use migrate_tenants_set::{DownSql, Migration};

/// diesel's exact DDL for its history table (kept identical so the diesel CLI agrees).
pub(crate) const HISTORY_DDL: &str = "(
       version VARCHAR(50) PRIMARY KEY NOT NULL,
       run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
)";

/// Marks the error raised when a migration ended its own transaction.
pub(crate) const SPLIT: &str = "migrate-tenants: transaction split";

/// The history table's name (unqualified, as diesel names it).
pub(crate) const HISTORY_TABLE: &str = "__diesel_schema_migrations";

/// Why a tenant's work stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HarnessError {
    /// A migration (or its revert) failed.
    #[error("{message}")]
    Migration {
        /// Directory name of the migration.
        migration: String,
        /// PostgreSQL's message with context.
        message: String,
        /// Set when the migration was rolled back for a reason that may pass (a retry may
        /// succeed).
        transient: Option<Transient>,
    },
    /// The tenant's lock stayed taken by another runner for the whole lock wait timeout.
    #[error("{0}")]
    LockWait(String),
    /// The connection to the server broke outside a migration.
    #[error("lost the connection to the server: {0}")]
    ConnectionLost(String),
    /// The run was interrupted while the tenant was being migrated.
    #[error("interrupted: {0}")]
    Interrupted(String),

    /// No connection could be had (password hidden).
    #[error("no database connection: {0}")]
    Connection(String),
    /// Bookkeeping, locking or connection trouble outside any migration.
    #[error("{0}")]
    Database(String),
    /// `down` reached a migration without `down.sql`.
    #[error("{0} has no down.sql: it cannot be reverted")]
    Irreversible(String),
    /// The tenant's history holds a version this binary does not know.
    #[error("applied version {0} is not in this migration set (was the tenant migrated by a newer release?)")]
    UnknownVersion(String),
    /// `up` would apply a pending migration older than the tenant's newest applied one.
    #[error("{pending} is pending but older than {newest}, the newest applied migration: refusing to apply it out of order (nothing was changed on this tenant)")]
    OutOfOrder {
        /// Directory name of the oldest pending migration that is out of order.
        pending: String,
        /// The newest applied migration (directory name, or the bare version if unknown).
        newest: String,
    },
    /// The schema does not exist.
    #[error("schema {0} does not exist")]
    MissingSchema(String),
    /// `tenant create` of a schema that exists.
    #[error("schema {0} already exists")]
    SchemaExists(String),
    /// `tenant drop` of a schema without a history table.
    #[error("schema {0} has no __diesel_schema_migrations table, so it is not a tenant; it was not dropped")]
    NotATenant(String),
}

/// Why a rolled-back migration may succeed when tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transient {
    /// The connection broke (the server restarted, a network blip).
    ConnectionLost,
    /// A serialization failure (SQLSTATE 40001).
    Serialization,
    /// A deadlock with another session.
    Deadlock,
    /// `lock_timeout` ran out waiting for a table lock.
    LockTimeout,
}

impl Transient {
    /// The SQLSTATE behind the reason, where it has one.
    fn sqlstate(self) -> Option<&'static str> {
        match self {
            Transient::ConnectionLost => None,
            Transient::Serialization => Some("40001"),
            Transient::Deadlock => Some("40P01"),
            Transient::LockTimeout => Some("55P03"),
        }
    }
}

impl HarnessError {
    /// Whether a new attempt at the tenant may succeed (its failed migration rolled back for
    /// a passing reason, or the connection broke between migrations).
    pub(crate) fn transient(&self) -> Option<Transient> {
        match self {
            HarnessError::Migration { transient, .. } => *transient,
            HarnessError::ConnectionLost(_) | HarnessError::Connection(_) => Some(Transient::ConnectionLost),
            _ => None,
        }
    }

    /// The migration this error belongs to, if any.
    pub(crate) fn migration(&self) -> Option<&str> {
        match self {
            HarnessError::Migration { migration, .. } | HarnessError::Irreversible(migration) => Some(migration),
            _ => None,
        }
    }
}

type Result<T> = std::result::Result<T, HarnessError>;

#[derive(QueryableByName)]
struct Flag {
    #[diesel(sql_type = Bool)]
    flag: bool,
}

#[derive(QueryableByName)]
struct VersionRow {
    #[diesel(sql_type = Text)]
    version: String,
}

/// Direction of a migration step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Up,
    Down,
}

#[derive(QueryableByName)]
struct LockRow {
    #[diesel(sql_type = Bool)]
    flag: bool,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pid: i32,
}

#[derive(QueryableByName)]
struct HolderRow {
    #[diesel(sql_type = Text)]
    holder: String,
}

/// The error a lock wait that timed out raises (ours, so never translated).
const LOCK_WAIT: &str = "migrate-tenants: lock wait timeout";

/// One tenant, locked, on one connection.
pub(crate) struct TenantHarness<'a> {
    conn: &'a mut PgConnection,
    schema: SchemaName,
    /// Builds what is sent (the same builder prints a dry run's SQL).
    sql: StepSql,
    /// Versions that run under the database-wide lock.
    database_wide: std::sync::Arc<std::collections::BTreeSet<String>>,
    /// The current step's commit marker (unique in this process).
    step_marker: u64,
    /// How the last failed in-transaction step may pass.
    last_transient: Option<Transient>,
    /// The backend's pid (for cancelling it).
    pid: i32,
    /// What differs on Citus (statement by statement, distributed schemas).
    citus: CitusSettings,
    /// A caller opened a transaction with [`Self::execute`] (`BEGIN`) that is still open.
    in_caller_tx: bool,
    control: Option<&'a RunControl>,
    released: bool,
    /// The run's journal: each step is recorded with its history row.
    journal: Option<JournalRun>,
}

impl TenantHarness<'_> {
    /// Whether the run was interrupted (a step that has not started yet stops).
    pub(crate) fn interrupted(&self) -> bool {
        self.control.is_some_and(RunControl::interrupted)
    }
}

impl<'a> TenantHarness<'a> {
    /// Takes the tenant's session advisory lock, waiting while another runner holds it (at
    /// most the lock wait timeout; the holder is named to `control` and in the error).
    /// `control` learns the backend working on the tenant, so an interruption can cancel it.
    pub(crate) fn lock(
        conn: &'a mut PgConnection,
        schema: &SchemaName,
        settings: &Settings,
        control: Option<&'a RunControl>,
    ) -> Result<TenantHarness<'a>> {
        let key = schema.lock_key();
        let context = format!("taking the advisory lock of {schema}");
        let first = diesel::sql_query("SELECT pg_try_advisory_lock($1) AS flag, pg_backend_pid() AS pid")
            .bind::<BigInt, _>(key)
            .get_result::<LockRow>(conn)
            .map_err(|e| db_error(&context, &e))?;
        if let Some(control) = control {
            control.track(first.pid, schema);
        }
        let mut harness = TenantHarness {
            conn,
            schema: schema.clone(),
            sql: StepSql::new(schema, settings),
            database_wide: settings.database_wide.clone(),
            step_marker: 0,
            last_transient: None,
            pid: first.pid,
            citus: settings.citus,
            in_caller_tx: false,
            control,
            released: true, // nothing to release until the lock is held
            journal: settings.journal.clone(),
        };
        if !first.flag {
            if control.is_some_and(RunControl::interrupted) {
                return Err(HarnessError::Interrupted(
                    "stopped before taking the tenant's lock".into(),
                ));
            }
            if let Err(e) = harness.wait_for_lock(settings.lock_wait_timeout) {
                if !matches!(e, HarnessError::LockWait(_)) {
                    // Cancelled or broken while waiting: the lock may have been granted just
                    // before; this connection must not go back to a pool holding it.
                    mark_broken(harness.conn);
                }
                return Err(e);
            }
        }
        harness.released = false;
        Ok(harness)
    }

    /// Waits for the lock another runner holds, naming the holder.
    fn wait_for_lock(&mut self, timeout: Option<std::time::Duration>) -> Result<()> {
        let key = self.schema.lock_key();
        let holder = self.lock_holder().unwrap_or_else(|| "another session".into());
        log::info!("{}: waiting for its lock, held by {holder}", self.schema);
        if let Some(control) = self.control {
            control.waiting(&self.schema, holder.clone());
        }
        if self.citus.statement_by_statement {
            return self.poll_for_lock(timeout, &holder);
        }
        let limit = match timeout {
            Some(t) => format!(
                "PERFORM set_config('lock_timeout', '{}ms', true); ",
                t.as_millis().max(1)
            ),
            None => String::new(),
        };
        // The exception is caught by its condition, not its (translated) message.
        let sql = format!(
            "DO $mt$BEGIN {limit}PERFORM pg_advisory_lock({key}); EXCEPTION WHEN lock_not_available THEN \
             RAISE EXCEPTION '{LOCK_WAIT}'; END$mt$"
        );
        match self.conn.batch_execute(&sql) {
            Ok(()) => Ok(()),
            Err(e) if e.to_string().contains(LOCK_WAIT) => {
                let waited = timeout.map_or(String::new(), |t| format!(" after {} s", t.as_secs_f64()));
                Err(HarnessError::LockWait(format!(
                    "another runner holds the lock of {}{waited}: {holder}",
                    self.schema
                )))
            }
            Err(e) => Err(db_error(
                &format!("waiting for the advisory lock of {}", self.schema),
                &e,
            )),
        }
    }

    /// Citus: waits for the tenant's lock by asking again (see [`citus::lock_by_polling`]:
    /// a session blocked inside a statement would hold up every `CREATE INDEX CONCURRENTLY`).
    fn poll_for_lock(&mut self, timeout: Option<std::time::Duration>, holder: &str) -> Result<()> {
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        let control = self.control;
        let interrupted = || control.is_some_and(RunControl::interrupted);
        match citus::lock_by_polling(self.conn, self.schema.lock_key(), deadline, interrupted) {
            Ok(citus::Polled::Taken) => Ok(()),
            Ok(citus::Polled::Interrupted) => Err(HarnessError::Interrupted(
                "stopped while waiting for the tenant's lock".into(),
            )),
            Ok(citus::Polled::TimedOut) => {
                let waited = timeout.map_or(String::new(), |t| format!(" after {} s", t.as_secs_f64()));
                Err(HarnessError::LockWait(format!(
                    "another runner holds the lock of {}{waited}: {holder}",
                    self.schema
                )))
            }
            Err(e) => Err(db_error(
                &format!("waiting for the advisory lock of {}", self.schema),
                &e,
            )),
        }
    }

    /// Who holds this tenant's advisory lock: pid, application, client, since when.
    fn lock_holder(&mut self) -> Option<String> {
        let key = self.schema.lock_key();
        let sql = format!(
            "SELECT format('pid %s (%s%s, connected since %s, %s)', a.pid, \
               coalesce(nullif(a.application_name, ''), 'no application_name'), \
               coalesce(' from ' || host(a.client_addr), ''), \
               to_char(a.backend_start, 'YYYY-MM-DD HH24:MI:SS TZ'), coalesce(a.state, 'unknown state')) AS holder \
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
               AND l.classid = (({key}::bigint >> 32) & 4294967295)::oid AND l.objid = ({key}::bigint & 4294967295)::oid \
             LIMIT 1"
        );
        diesel::sql_query(sql)
            .get_result::<HolderRow>(self.conn)
            .ok()
            .map(|r| r.holder)
    }

    fn conn(&mut self) -> &mut PgConnection {
        self.conn
    }

    /// Runs `f` on the harness's connection (catalog reads while the tenant is locked).
    pub(crate) fn with_conn<T>(&mut self, f: impl FnOnce(&mut PgConnection) -> T) -> T {
        f(self.conn)
    }

    /// Whether the schema exists.
    pub(crate) fn schema_exists(&mut self) -> Result<bool> {
        diesel::sql_query(self.sql.schema_exists())
            .get_result::<Flag>(self.conn())
            .map(|f| f.flag)
            .map_err(|e| db_error("checking the schema", &e))
    }

    /// Whether the schema has a history table (whether it is a tenant at all).
    pub(crate) fn has_history(&mut self) -> Result<bool> {
        history_exists(self.conn, &self.schema)
    }

    /// `DROP SCHEMA ... CASCADE`: the tenant and all its data.
    pub(crate) fn drop_schema(&mut self) -> Result<()> {
        let sql = self.sql.drop_schema();
        self.execute(&sql)
    }

    /// Creates the history table (and, with `create_schema`, the schema) if missing.
    pub(crate) fn prepare(&mut self, create_schema: bool) -> Result<()> {
        let sql = self.sql.prepare(create_schema);
        let own_transaction = create_schema && self.citus.distribute_schemas;
        self.send_prepare(&sql, own_transaction).map_err(|e| {
            // Asked of the catalog, not of the (translated) message.
            if !create_schema && self.schema_exists().ok() == Some(false) {
                HarnessError::MissingSchema(self.schema.to_string())
            } else {
                db_error(
                    if create_schema {
                        "creating the schema and its history table"
                    } else {
                        "creating the history table"
                    },
                    &e,
                )
            }
        })
    }

    /// Sends `prepare`'s SQL: on Citus one statement per query and, with `own_transaction`
    /// (a distributed `CREATE SCHEMA`, whose setting is LOCAL) in a transaction of its own
    /// unless the caller has one open.
    fn send_prepare(&mut self, sql: &str, own_transaction: bool) -> std::result::Result<(), DieselError> {
        if !self.citus.statement_by_statement {
            return self.conn().batch_execute(sql);
        }
        let in_tx = !own_transaction || self.in_caller_tx;
        let wrapped = if in_tx {
            sql.to_string()
        } else {
            format!("BEGIN;\n{sql}\nCOMMIT;")
        };
        let result = citus::execute_each(self.conn(), &wrapped).map_err(|(e, _)| e);
        if result.is_err() && !in_tx {
            let _ = self.conn().batch_execute("ROLLBACK");
        }
        result
    }

    /// Applied versions, newest first (empty when there is no history table).
    pub(crate) fn applied(&mut self) -> Result<Vec<String>> {
        applied_versions(self.conn, &self.schema)
    }

    /// Runs `migration`'s `up.sql` and records it, atomically unless the migration runs
    /// outside a transaction. With `in_transaction`, the caller has already opened a
    /// transaction (so no BEGIN/COMMIT is sent).
    pub(crate) fn apply(&mut self, migration: &Migration, in_transaction: bool) -> Result<()> {
        log::debug!("{}: applying {}", self.schema, migration.dir_name);
        let record = format!(
            "{}{}",
            self.sql.record(&migration.version),
            self.journaled(migration, StepKind::Up)
        );
        self.step(migration, Direction::Up, &migration.up, &record, in_transaction)
    }

    /// Runs `migration`'s `down.sql` and removes its history row. An empty `down.sql`
    /// only removes the row; a missing one is an error.
    pub(crate) fn revert(&mut self, migration: &Migration, in_transaction: bool) -> Result<()> {
        log::debug!("{}: reverting {}", self.schema, migration.dir_name);
        let forget = format!(
            "{}{}",
            self.sql.forget(&migration.version),
            self.journaled(migration, StepKind::Down)
        );
        match &migration.down {
            DownSql::Missing => Err(HarnessError::Irreversible(migration.dir_name.clone())),
            DownSql::NoOp => self.conn().batch_execute(&forget).map_err(|e| HarnessError::Migration {
                migration: migration.dir_name.clone(),
                message: describe(&e, None),
                transient: None,
            }),
            DownSql::Sql(down) => self.step(migration, Direction::Down, down, &forget, in_transaction),
        }
    }

    /// Records `migration` as applied (or pending) without running it, in one transaction
    /// with its journal row; refused unless `force` when its tables say otherwise.
    pub(crate) fn mark(&mut self, migration: &Migration, applied: bool, force: bool) -> Result<()> {
        let check = match force {
            true => String::new(),
            false => crate::mark::contradiction_check(&self.schema, migration, applied),
        };
        let (history, kind) = match applied {
            // A schema built by hand gets its history table in the same transaction.
            true => (
                format!(
                    "CREATE TABLE IF NOT EXISTS {history} {HISTORY_DDL};\nINSERT INTO {history} (version) VALUES ({})",
                    quote_literal(&migration.version),
                    history = self.sql.history()
                ),
                StepKind::MarkApplied,
            ),
            false => (
                format!(
                    "DELETE FROM {} WHERE version = {}",
                    self.sql.history(),
                    quote_literal(&migration.version)
                ),
                StepKind::MarkPending,
            ),
        };
        let sql = format!(
            "BEGIN;
{check}{history}{};
COMMIT;",
            self.journaled(migration, kind)
        );
        self.conn().batch_execute(&sql).map_err(|e| {
            let _ = self.conn().batch_execute("ROLLBACK");
            HarnessError::Migration {
                migration: migration.dir_name.clone(),
                message: describe(&e, None),
                transient: None,
            }
        })
    }

    /// The journal's record of a step, to send with its history change (`;` first), or
    /// nothing without a journal. It is written as the session's own role: a migration that
    /// ran `SET ROLE` keeps that role for its history row (as before) and, after COMMIT, for
    /// the rest of the session, but the journal is not its to write.
    fn journaled(&self, m: &Migration, kind: StepKind) -> String {
        // The migration's role is restored right after, for the steps that follow in the
        // same transaction (an all-or-nothing run).
        self.journal.as_ref().map_or_else(String::new, |j| {
            format!(
                ";\nSELECT set_config('migrate_tenants.role', current_setting('role'), true);\nSET LOCAL ROLE NONE;\n{};\n\
                 SELECT set_config('role', coalesce(nullif(current_setting('migrate_tenants.role', true), ''), 'none'), true)",
                j.step_done(&self.schema, m, kind)
            )
        })
    }

    /// Records a failed step in the journal (after its rollback; a journal that cannot be
    /// written is logged, never fatal).
    pub(crate) fn journal_failure(&mut self, m: &Migration, up: bool, error: &HarnessError) {
        let sqlstate = error.transient().and_then(Transient::sqlstate);
        self.journal_failure_with(m, up, error, sqlstate);
    }

    fn journal_failure_with(&mut self, m: &Migration, up: bool, error: &HarnessError, sqlstate: Option<&str>) {
        let Some(journal) = &self.journal else { return };
        let kind = if up { StepKind::Up } else { StepKind::Down };
        let sql = format!(
            "BEGIN; SET LOCAL ROLE NONE; {}; COMMIT;",
            journal.step_failed(&self.schema, m, kind, &error.to_string(), sqlstate)
        );
        if let Err(e) = self.conn().batch_execute(&sql) {
            let _ = self.conn().batch_execute("ROLLBACK");
            log::warn!(
                "{}: could not record the failed step in the run journal: {e}",
                self.schema
            );
        }
    }

    /// Runs raw SQL on the harness's connection (transaction control for callers that
    /// group several steps into one transaction).
    pub(crate) fn execute(&mut self, sql: &str) -> Result<()> {
        let result = self.conn().batch_execute(sql).map_err(|e| db_error(sql, &e));
        // A raw BEGIN is invisible to diesel (and to the server until a statement runs).
        match sql {
            "BEGIN" => self.in_caller_tx = result.is_ok(),
            "COMMIT" | "ROLLBACK" => self.in_caller_tx = false,
            _ => {}
        }
        result
    }

    fn step(&mut self, m: &Migration, dir: Direction, body: &str, bookkeeping: &str, in_tx: bool) -> Result<()> {
        let wide = self.database_wide.contains(&m.version);
        let result = if m.run_in_transaction || in_tx {
            self.step_in_transaction(body, bookkeeping, in_tx, wide)
        } else if wide || self.citus.statement_by_statement {
            // On Citus, CREATE INDEX CONCURRENTLY in two tenants at once deadlock on a worker
            // (each waits for the other's virtual transaction): one tenant at a time.
            self.one_at_a_time(|h| h.step_outside_transaction(body, bookkeeping))
        } else {
            self.step_outside_transaction(body, bookkeeping)
        };
        let transient = self.last_transient.take();
        let error = result.map_err(|message| {
            let file = if dir == Direction::Up { "up.sql" } else { "down.sql" };
            let transactional = m.run_in_transaction || in_tx;
            let rolled_back = if message.contains(SPLIT) {
                "NOT rolled back: check the schema before retrying"
            } else if transactional && transient == Some(Transient::ConnectionLost) {
                "the connection was lost: rolled back unless its COMMIT had reached the server; \
                 the next run reads the history again"
            } else if transactional {
                "rolled back"
            } else {
                "NOT rolled back: it runs outside a transaction; check the schema before retrying"
            };
            HarnessError::Migration {
                migration: m.dir_name.clone(),
                message: format!("{file}: {message} ({rolled_back})"),
                // Only a whole transaction that rolled back may be tried again, and only when
                // this step owns it (inside a larger transaction the caller decides).
                transient: transient.filter(|_| transactional && !in_tx && !message.contains(SPLIT)),
            }
        });
        if let (Err(e), false) = (&error, in_tx) {
            // Inside a larger transaction, the caller records the failure after its rollback.
            self.journal_failure_with(m, dir == Direction::Up, e, transient.and_then(Transient::sqlstate));
        }
        error
    }

    /// One round trip: search_path, checks, body and bookkeeping in one transaction.
    fn step_in_transaction(
        &mut self,
        body: &str,
        bookkeeping: &str,
        in_tx: bool,
        database_wide: bool,
    ) -> std::result::Result<(), String> {
        self.step_marker = step_sql::next_marker();
        let prefix = self.sql.transaction_prefix(in_tx, database_wide, self.step_marker);
        let batch = self.sql.transaction_batch(&prefix, body, bookkeeping, in_tx);
        match self.send(&batch) {
            Ok(()) => Ok(()),
            Err((e, offset)) => {
                let mut message = describe_at(&e, Some((prefix.chars().count(), body)), offset);
                self.last_transient = classify(&e);
                if !in_tx {
                    let _ = self.conn().batch_execute("ROLLBACK");
                    if self.marker_committed() {
                        message = format!("{SPLIT}: the migration ended its transaction before failing: {message}");
                    }
                }
                Err(message)
            }
        }
    }

    /// Sends a batch the way this database needs it: one round trip on PostgreSQL, one
    /// statement per query on Citus. The error comes with the character offset in `sql` of
    /// the statement that failed.
    fn send(&mut self, sql: &str) -> std::result::Result<(), (DieselError, usize)> {
        if self.citus.statement_by_statement {
            citus::execute_each(self.conn, sql)
        } else {
            self.conn.batch_execute(sql).map_err(|e| (e, 0))
        }
    }

    /// Whether the marker of the current step survived its ROLLBACK, i.e. part of the step
    /// was committed.
    fn marker_committed(&mut self) -> bool {
        let sql = format!(
            "SELECT current_setting('migrate_tenants.step', true) = '{}' AS flag",
            self.step_marker
        );
        diesel::sql_query(sql)
            .get_result::<Flag>(self.conn())
            .map(|f| f.flag)
            .unwrap_or(false)
    }

    /// A single statement that cannot run in a transaction block: sent alone.
    fn step_outside_transaction(&mut self, body: &str, bookkeeping: &str) -> std::result::Result<(), String> {
        let enter = self.sql.enter(false);
        let finish = self.sql.outside_finish(body, bookkeeping);
        let interrupted = self.control.is_some_and(RunControl::interrupted);
        let result = self
            .conn()
            .batch_execute(&enter)
            .map_err(|e| describe(&e, None))
            .and_then(|()| match interrupted {
                // Not started: a cancel cannot stop a statement that is not running yet.
                true => Err("interrupted before the statement started (nothing ran)".to_string()),
                false => Ok(()),
            })
            .and_then(|()| {
                self.conn()
                    .batch_execute(body)
                    .map_err(|e| describe(&e, Some((0, body))) + &concurrently_hint(body))
            })
            .and_then(|()| self.send(&finish).map_err(|(e, _)| describe(&e, None)));
        if result.is_err() {
            let _ = self.conn().batch_execute("ROLLBACK");
        }
        let reset = self.conn().batch_execute(StepSql::outside_reset());
        result.and(reset.map_err(|e| describe(&e, None)))
    }

    /// Runs `step` under the database-wide session lock (for a non-transactional migration
    /// that touches database-wide objects).
    fn one_at_a_time(
        &mut self,
        step: impl FnOnce(&mut Self) -> std::result::Result<(), String>,
    ) -> std::result::Result<(), String> {
        if self.citus.statement_by_statement {
            let control = self.control;
            let interrupted = || control.is_some_and(RunControl::interrupted);
            match citus::lock_by_polling(self.conn, crate::tenant::database_wide_lock_key(), None, interrupted) {
                Ok(citus::Polled::Taken) => {}
                Ok(_) => return Err("interrupted while waiting for the database-wide lock (nothing ran)".into()),
                Err(e) => return Err(describe(&e, None)),
            }
        } else {
            self.conn()
                .batch_execute(&StepSql::wide_lock())
                .map_err(|e| describe(&e, None))?;
        }
        let result = step(self);
        // The lock is also released with the others when the tenant is released.
        let _ = self.conn().batch_execute(&StepSql::wide_unlock());
        result
    }

    /// Resets the session and releases the lock. If that fails, the connection is marked
    /// broken so that the pool closes it instead of handing it to the next tenant. The
    /// tenant's work is done: an interruption no longer cancels this backend.
    pub(crate) fn release(mut self) -> Result<()> {
        self.released = true;
        if let Some(control) = self.control.take() {
            control.untrack(self.pid);
        }
        self.unlock()
    }

    fn unlock(&mut self) -> Result<()> {
        let sql = self.sql.release();
        self.conn().batch_execute(&sql).map_err(|e| {
            mark_broken(self.conn);
            db_error("releasing the tenant", &e)
        })
    }
}

impl Drop for TenantHarness<'_> {
    fn drop(&mut self) {
        if !self.released {
            if let Err(e) = self.unlock() {
                log::warn!("{}: {e}; the connection will be closed", self.schema);
            }
        }
        if let Some(control) = self.control {
            control.untrack(self.pid);
        }
    }
}

/// Applied versions of `schema`, newest first (empty when it has no history table). Reads
/// without the tenant's lock: for `status`, and for the harness once it holds the lock.
pub(crate) fn applied_versions(conn: &mut PgConnection, schema: &SchemaName) -> Result<Vec<String>> {
    let sql = StepSql::new(schema, &Settings::default()).applied();
    match diesel::sql_query(sql).load::<VersionRow>(conn) {
        Ok(rows) => Ok(rows.into_iter().map(|r| r.version).collect()),
        Err(e) if !history_exists(conn, schema).unwrap_or(true) => {
            log::debug!("{schema}: no history table ({e})");
            Ok(Vec::new())
        }
        Err(e) => Err(db_error(&format!("reading the migration history of {schema}"), &e)),
    }
}

fn history_exists(conn: &mut PgConnection, schema: &SchemaName) -> Result<bool> {
    diesel::sql_query(StepSql::new(schema, &Settings::default()).history_exists())
        .get_result::<Flag>(conn)
        .map(|f| f.flag)
        .map_err(|e| db_error("looking for the history table", &e))
}

fn concurrently_hint(body: &str) -> String {
    if body.to_ascii_lowercase().contains("concurrently") {
        "; a failed CREATE INDEX CONCURRENTLY leaves an INVALID index behind: drop it before retrying".into()
    } else {
        String::new()
    }
}

fn db_error(context: &str, e: &DieselError) -> HarnessError {
    let message = format!("{context}: {}", describe(e, None));
    match classify(e) {
        Some(Transient::ConnectionLost) => HarnessError::ConnectionLost(message),
        _ => HarnessError::Database(message),
    }
}

/// Whether a failure may pass. diesel gives the SQLSTATE-based kind for serialization
/// failures and the connection's state for a lost one; deadlocks and lock timeouts are only
/// recognised by PostgreSQL's English messages (with another `lc_messages` they are not
/// retried: a limit the README states).
pub(crate) fn classify(e: &DieselError) -> Option<Transient> {
    use diesel::result::DatabaseErrorKind as Kind;
    let DieselError::DatabaseError(kind, info) = e else {
        return None;
    };
    match kind {
        Kind::ClosedConnection | Kind::UnableToSendCommand => Some(Transient::ConnectionLost),
        Kind::SerializationFailure => Some(Transient::Serialization),
        _ if info.message().starts_with("deadlock detected") => Some(Transient::Deadlock),
        _ if info.message().starts_with("canceling statement due to lock timeout") => Some(Transient::LockTimeout),
        _ => None,
    }
}

/// PostgreSQL's message with its detail and hint; with `body` = (characters before the
/// body in the batch, body), the line of the body the error points at.
pub(crate) fn describe(e: &DieselError, body: Option<(usize, &str)>) -> String {
    describe_at(e, body, 0)
}

/// [`describe`] for an error of a statement sent alone that starts `shift` characters into
/// the batch (PostgreSQL's position is relative to what it received).
fn describe_at(e: &DieselError, body: Option<(usize, &str)>, shift: usize) -> String {
    let DieselError::DatabaseError(_, info) = e else {
        return e.to_string();
    };
    let mut out = String::new();
    if let (Some(pos), Some((before, body))) = (info.statement_position(), body) {
        let pos = usize::try_from(pos).unwrap_or(0) + shift;
        if pos > before && pos - before <= body.chars().count() {
            let line = body.chars().take(pos - before - 1).filter(|&c| c == '\n').count() + 1;
            out.push_str(&format!("line {line}: "));
        }
    }
    out.push_str(info.message());
    push_info(&mut out, "detail", info.details());
    push_info(&mut out, "hint", info.hint());
    out
}

fn push_info(out: &mut String, label: &str, value: Option<&str>) {
    if let Some(v) = value {
        out.push_str(&format!(" ({label}: {v})"));
    }
}
