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
use crate::database::{mark_broken, SESSION_RESET};
use crate::tenant::{database_wide_lock_key, quote_literal, SchemaName};
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

/// Source of unique per-step commit markers (see `step_in_transaction`).
static STEP_MARKERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

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
    /// The `search_path` value migrations run with, as a SQL literal.
    search_path: String,
    /// `lock_timeout` for migration statements, e.g. `5000ms`.
    lock_timeout: Option<String>,
    /// `statement_timeout` for migration statements.
    statement_timeout: Option<String>,
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
    /// Run again after the session reset, when the tenant is released.
    session_sql: Option<String>,
    /// A caller opened a transaction with [`Self::execute`] (`BEGIN`) that is still open.
    in_caller_tx: bool,
    control: Option<&'a RunControl>,
    released: bool,
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
            search_path: String::new(),
            lock_timeout: settings.lock_timeout.map(|t| format!("{}ms", t.as_millis())),
            statement_timeout: settings.statement_timeout.map(|t| format!("{}ms", t.as_millis())),
            database_wide: settings.database_wide.clone(),
            step_marker: 0,
            last_transient: None,
            pid: first.pid,
            citus: settings.citus,
            session_sql: settings.session_sql.clone(),
            in_caller_tx: false,
            control,
            released: true, // nothing to release until the lock is held
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
        let path: Vec<String> = std::iter::once(schema)
            .chain(&settings.search_path_suffix)
            .map(SchemaName::quoted)
            .collect();
        harness.search_path = quote_literal(&path.join(", "));
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

    fn history(&self) -> String {
        format!("{}.{HISTORY_TABLE}", self.schema.quoted())
    }

    /// Whether the schema exists.
    pub(crate) fn schema_exists(&mut self) -> Result<bool> {
        let literal = self.schema.literal();
        diesel::sql_query(format!(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = {literal}) AS flag"
        ))
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
        let sql = format!("DROP SCHEMA {} CASCADE", self.schema.quoted());
        self.execute(&sql)
    }

    /// Creates the history table (and, with `create_schema`, the schema) if missing.
    pub(crate) fn prepare(&mut self, create_schema: bool) -> Result<()> {
        let schema = self.schema.quoted();
        let create = match create_schema {
            true if self.citus.distribute_schemas => citus::create_distributed_schema(&schema),
            true => format!("CREATE SCHEMA IF NOT EXISTS {schema};\n"),
            false => String::new(),
        };
        let sql = format!("{create}CREATE TABLE IF NOT EXISTS {} {HISTORY_DDL};", self.history());
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
            "INSERT INTO {} (version) VALUES ({})",
            self.history(),
            quote_literal(&migration.version)
        );
        self.step(migration, Direction::Up, &migration.up, &record, in_transaction)
    }

    /// Runs `migration`'s `down.sql` and removes its history row. An empty `down.sql`
    /// only removes the row; a missing one is an error.
    pub(crate) fn revert(&mut self, migration: &Migration, in_transaction: bool) -> Result<()> {
        log::debug!("{}: reverting {}", self.schema, migration.dir_name);
        let forget = format!(
            "DELETE FROM {} WHERE version = {}",
            self.history(),
            quote_literal(&migration.version)
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
        result.map_err(|message| {
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
        })
    }

    /// Sets `search_path` (and `lock_timeout`) for the migration and checks the schema is
    /// really the current one. In a transaction (`local`), the settings end at COMMIT and
    /// the transaction id is remembered, so [`Self::check_after`] can tell whether the
    /// migration ended the transaction.
    fn enter(&self, local: bool) -> String {
        let mut sql = format!("SELECT set_config('search_path', {}, {local});\n", self.search_path);
        // Not outside a transaction: CREATE INDEX CONCURRENTLY's wait for older
        // transactions counts as a lock wait, and timing it out leaves an INVALID index.
        if let Some(timeout) = self.lock_timeout.as_ref().filter(|_| local) {
            sql.push_str(&format!(
                "SELECT set_config('lock_timeout', {}, {local});\n",
                quote_literal(timeout)
            ));
        }
        if let Some(timeout) = self.statement_timeout.as_ref().filter(|_| local) {
            sql.push_str(&format!(
                "SELECT set_config('statement_timeout', {}, {local});\n",
                quote_literal(timeout)
            ));
        }
        if local {
            sql.push_str("SELECT set_config('migrate_tenants.txid', txid_current()::text, true);\n");
        }
        sql.push_str(&format!(
            "DO $mt$BEGIN IF current_schema() IS DISTINCT FROM {schema} THEN RAISE EXCEPTION \
             'migrate-tenants: schema % is not usable (current_schema() is %): does it exist, and may this role use it?', \
             {schema}, current_schema(); END IF; END$mt$;\n",
            schema = self.schema.literal(),
        ));
        sql
    }

    /// Checks the migration left `search_path` alone and, in a transaction, did not end it.
    fn check_after(&self, local: bool) -> String {
        let split = if local {
            format!(
                "IF current_setting('migrate_tenants.txid', true) IS DISTINCT FROM txid_current()::text THEN RAISE EXCEPTION \
                 '{SPLIT}: the migration ended its transaction (COMMIT/ROLLBACK); what ran before that is committed'; END IF; "
            )
        } else {
            String::new()
        };
        format!(
            "DO $mt$BEGIN {split}IF current_setting('search_path') IS DISTINCT FROM {path} THEN RAISE EXCEPTION \
             'migrate-tenants: the migration changed search_path to %; a migration must not change search_path', \
             current_setting('search_path'); END IF; END$mt$;\n",
            path = self.search_path,
        )
    }

    /// One round trip: search_path, checks, body and bookkeeping in one transaction.
    fn step_in_transaction(
        &mut self,
        body: &str,
        bookkeeping: &str,
        in_tx: bool,
        database_wide: bool,
    ) -> std::result::Result<(), String> {
        let (begin, commit) = if in_tx { ("", "") } else { ("BEGIN;\n", "COMMIT;") };
        // Held until the transaction ends: tenants touching database-wide objects take turns,
        // and each sees what the previous one committed (IF NOT EXISTS then works).
        let begin = if database_wide {
            format!("{begin}SELECT pg_advisory_xact_lock({});\n", database_wide_lock_key())
        } else {
            begin.to_string()
        };
        self.step_marker = STEP_MARKERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // A session-level marker set inside the transaction: it survives only if the
        // transaction (or a part of it, split off by a COMMIT in the body) was committed.
        let marker = format!(
            "SELECT set_config('migrate_tenants.step', '{}', false);\n",
            self.step_marker
        );
        let prefix = format!("{begin}{marker}{}", self.enter(true));
        let batch = format!("{prefix}{body}\n;\n{}{bookkeeping};\n{commit}", self.check_after(true));
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
        let enter = self.enter(false);
        // Sent as its own query, in autocommit both timestamps are equal; they differ when
        // the body left a transaction open (which would swallow the history row).
        let finish = format!(
            "DO $mt$BEGIN IF transaction_timestamp() <> statement_timestamp() THEN RAISE EXCEPTION \
             'migrate-tenants: the migration left a transaction open'; END IF; END$mt$;\n{}{}{bookkeeping};",
            self.check_after(false),
            self.invalid_index_check(body),
        );
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
        let reset = self.conn().batch_execute("RESET search_path");
        result.and(reset.map_err(|e| describe(&e, None)))
    }

    /// Runs `step` under the database-wide session lock (for a non-transactional migration
    /// that touches database-wide objects).
    fn one_at_a_time(
        &mut self,
        step: impl FnOnce(&mut Self) -> std::result::Result<(), String>,
    ) -> std::result::Result<(), String> {
        let key = database_wide_lock_key();
        if self.citus.statement_by_statement {
            let control = self.control;
            let interrupted = || control.is_some_and(RunControl::interrupted);
            match citus::lock_by_polling(self.conn, key, None, interrupted) {
                Ok(citus::Polled::Taken) => {}
                Ok(_) => return Err("interrupted while waiting for the database-wide lock (nothing ran)".into()),
                Err(e) => return Err(describe(&e, None)),
            }
        } else {
            self.conn()
                .batch_execute(&format!("SELECT pg_advisory_lock({key})"))
                .map_err(|e| describe(&e, None))?;
        }
        let result = step(self);
        // The lock is also released with the others when the tenant is released.
        let _ = self.conn().batch_execute(&format!("SELECT pg_advisory_unlock({key})"));
        result
    }

    /// After a `CONCURRENTLY` build: refuses to record the version while the schema holds an
    /// INVALID index (a failed or interrupted build leaves one, and `IF NOT EXISTS` then
    /// skips it silently), naming the statement that drops it.
    fn invalid_index_check(&self, body: &str) -> String {
        if !body.to_ascii_lowercase().contains("concurrently") {
            return String::new();
        }
        // Only indexes the migration names: an unrelated INVALID index (an application's
        // REINDEX CONCURRENTLY leftover) is none of this migration's business.
        format!(
            "DO $mt$DECLARE bad text; drops text; BEGIN \
             SELECT string_agg(format('%I.%I', n.nspname, c.relname), ', '), \
                    string_agg(format('DROP INDEX CONCURRENTLY %I.%I;', n.nspname, c.relname), ' ') \
               INTO bad, drops FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = {schema} AND NOT i.indisvalid AND strpos(lower({body}), lower(c.relname)) > 0; \
             IF bad IS NOT NULL THEN RAISE EXCEPTION 'migrate-tenants: INVALID index % in the schema (a CONCURRENTLY \
             build failed or was interrupted); the version was not recorded: run % and run again', \
             bad, drops; END IF; END$mt$;\n",
            schema = self.schema.literal(),
            body = quote_literal(body),
        )
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
        let session = self
            .session_sql
            .as_deref()
            .map_or(String::new(), |s| format!("{s}\n;\n"));
        let sql = format!(
            "{SESSION_RESET}\n{session}\
             DO $mt$BEGIN IF NOT pg_advisory_unlock({key}) THEN RAISE EXCEPTION \
             'migrate-tenants: the advisory lock of % was lost during the run (did a migration call \
             pg_advisory_unlock_all() or DISCARD ALL?); another runner may have migrated it at the same time', {schema}; \
             END IF; END$mt$;\n\
             SELECT pg_advisory_unlock_all();",
            key = self.schema.lock_key(),
            schema = self.schema.literal(),
        );
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
    let sql = format!(
        "SELECT version::text AS version FROM {}.{HISTORY_TABLE} ORDER BY version DESC",
        schema.quoted()
    );
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
    let table = quote_literal(&format!("{}.{HISTORY_TABLE}", schema.quoted()));
    diesel::sql_query(format!("SELECT to_regclass({table}) IS NOT NULL AS flag"))
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
