/*!
The SQL the harness sends for one tenant, built by pure functions.

[`TenantHarness`](crate::harness) sends what these build; a dry run
([`dry_run`](crate::dry_run)) prints what they build. One builder for both is what makes
`--dry-run --sql` the exact SQL of the real run: search_path, checks, bookkeeping and
transaction control included.
*/

use crate::config::Settings;
use crate::database::SESSION_RESET;
use crate::harness::{HISTORY_DDL, HISTORY_TABLE, SPLIT};
use crate::tenant::{database_wide_lock_key, quote_literal, SchemaName};

/// Source of unique per-step commit markers (see [`StepSql::transaction_prefix`]).
static STEP_MARKERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A new commit marker, unique in this process.
pub(crate) fn next_marker() -> u64 {
    STEP_MARKERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Builds the SQL of one tenant's steps.
#[derive(Debug, Clone)]
pub(crate) struct StepSql {
    schema: SchemaName,
    /// The `search_path` value migrations run with, as a SQL literal.
    search_path: String,
    /// `lock_timeout` for migration statements, e.g. `5000ms`.
    lock_timeout: Option<String>,
    /// `statement_timeout` for migration statements.
    statement_timeout: Option<String>,
    /// SQL run after each session reset (`--session-sql`).
    session_sql: Option<String>,
    /// New tenant schemas are Citus distributed schemas.
    distribute_schemas: bool,
}

impl StepSql {
    /// The builder for `schema` with the run's settings.
    pub(crate) fn new(schema: &SchemaName, settings: &Settings) -> StepSql {
        let path: Vec<String> = std::iter::once(schema)
            .chain(&settings.search_path_suffix)
            .map(SchemaName::quoted)
            .collect();
        StepSql {
            schema: schema.clone(),
            search_path: quote_literal(&path.join(", ")),
            lock_timeout: settings.lock_timeout.map(|t| format!("{}ms", t.as_millis())),
            statement_timeout: settings.statement_timeout.map(|t| format!("{}ms", t.as_millis())),
            session_sql: settings.session_sql.clone(),
            distribute_schemas: settings.citus.distribute_schemas,
        }
    }

    /// The history table, schema-qualified.
    pub(crate) fn history(&self) -> String {
        format!("{}.{HISTORY_TABLE}", self.schema.quoted())
    }

    /// Takes the tenant's session advisory lock, waiting for it (a script's form of the
    /// harness's try-then-wait).
    pub(crate) fn lock(&self) -> String {
        format!("SELECT pg_advisory_lock({});", self.schema.lock_key())
    }

    /// Creates the history table (and, with `create_schema`, the schema) if missing.
    pub(crate) fn prepare(&self, create_schema: bool) -> String {
        let create = match create_schema {
            true if self.distribute_schemas => crate::citus::create_distributed_schema(&self.schema.quoted()),
            true => format!("CREATE SCHEMA IF NOT EXISTS {};\n", self.schema.quoted()),
            false => String::new(),
        };
        format!("{create}CREATE TABLE IF NOT EXISTS {} {HISTORY_DDL};", self.history())
    }

    /// Reads the applied versions, newest first.
    pub(crate) fn applied(&self) -> String {
        format!(
            "SELECT version::text AS version FROM {} ORDER BY version DESC",
            self.history()
        )
    }

    /// Whether the history table exists (a query returning `flag`).
    pub(crate) fn history_exists(&self) -> String {
        format!(
            "SELECT to_regclass({}) IS NOT NULL AS flag",
            quote_literal(&self.history())
        )
    }

    /// Records `version` as applied.
    pub(crate) fn record(&self, version: &str) -> String {
        format!(
            "INSERT INTO {} (version) VALUES ({})",
            self.history(),
            quote_literal(version)
        )
    }

    /// Forgets `version`.
    pub(crate) fn forget(&self, version: &str) -> String {
        format!(
            "DELETE FROM {} WHERE version = {}",
            self.history(),
            quote_literal(version)
        )
    }

    /// `DROP SCHEMA ... CASCADE`.
    pub(crate) fn drop_schema(&self) -> String {
        format!("DROP SCHEMA {} CASCADE", self.schema.quoted())
    }

    /// Whether the schema exists (a query returning `flag`).
    pub(crate) fn schema_exists(&self) -> String {
        format!(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = {}) AS flag",
            self.schema.literal()
        )
    }

    /// Sets `search_path` (and the timeouts) for the migration and checks the schema is
    /// really the current one. In a transaction (`local`), the settings end at COMMIT and
    /// the transaction id is remembered, so [`Self::check_after`] can tell whether the
    /// migration ended the transaction.
    pub(crate) fn enter(&self, local: bool) -> String {
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
    pub(crate) fn check_after(&self, local: bool) -> String {
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

    /// What an in-transaction step sends before the body: BEGIN (unless the caller holds a
    /// transaction), the database-wide lock when needed, the commit marker and
    /// [`Self::enter`].
    pub(crate) fn transaction_prefix(&self, in_tx: bool, database_wide: bool, marker: u64) -> String {
        let begin = if in_tx { "" } else { "BEGIN;\n" };
        // Held until the transaction ends: tenants touching database-wide objects take turns,
        // and each sees what the previous one committed (IF NOT EXISTS then works).
        let wide = match database_wide {
            true => format!("SELECT pg_advisory_xact_lock({});\n", database_wide_lock_key()),
            false => String::new(),
        };
        // A session-level marker set inside the transaction: it survives only if the
        // transaction (or a part of it, split off by a COMMIT in the body) was committed.
        let marker = format!("SELECT set_config('migrate_tenants.step', '{marker}', false);\n");
        format!("{begin}{wide}{marker}{}", self.enter(true))
    }

    /// One round trip: `prefix` (from [`Self::transaction_prefix`]), the body, the checks,
    /// the bookkeeping and COMMIT (unless the caller holds a transaction).
    pub(crate) fn transaction_batch(&self, prefix: &str, body: &str, bookkeeping: &str, in_tx: bool) -> String {
        let commit = if in_tx { "" } else { "COMMIT;" };
        format!("{prefix}{body}\n;\n{}{bookkeeping};\n{commit}", self.check_after(true))
    }

    /// What a step outside a transaction sends after its single statement: the checks, the
    /// INVALID-index check and the bookkeeping.
    pub(crate) fn outside_finish(&self, body: &str, bookkeeping: &str) -> String {
        // Sent as its own query, in autocommit both timestamps are equal; they differ when
        // the body left a transaction open (which would swallow the history row).
        format!(
            "DO $mt$BEGIN IF transaction_timestamp() <> statement_timestamp() THEN RAISE EXCEPTION \
             'migrate-tenants: the migration left a transaction open'; END IF; END$mt$;\n{}{}{bookkeeping};",
            self.check_after(false),
            self.invalid_index_check(body),
        )
    }

    /// After a `CONCURRENTLY` build: refuses to record the version while the schema holds an
    /// INVALID index (a failed or interrupted build leaves one, and `IF NOT EXISTS` then
    /// skips it silently), naming the statement that drops it.
    pub(crate) fn invalid_index_check(&self, body: &str) -> String {
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

    /// Ends a step outside a transaction: the session's `search_path` back to the default.
    pub(crate) fn outside_reset() -> &'static str {
        "RESET search_path"
    }

    /// Takes the database-wide session lock (non-transactional database-wide steps).
    pub(crate) fn wide_lock() -> String {
        format!("SELECT pg_advisory_lock({})", database_wide_lock_key())
    }

    /// Releases the database-wide session lock.
    pub(crate) fn wide_unlock() -> String {
        format!("SELECT pg_advisory_unlock({})", database_wide_lock_key())
    }

    /// Resets the session and releases the tenant's lock (and any other advisory lock).
    pub(crate) fn release(&self) -> String {
        let session = self
            .session_sql
            .as_deref()
            .map_or(String::new(), |s| format!("{s}\n;\n"));
        format!(
            "{SESSION_RESET}\n{session}\
             DO $mt$BEGIN IF NOT pg_advisory_unlock({key}) THEN RAISE EXCEPTION \
             'migrate-tenants: the advisory lock of % was lost during the run (did a migration call \
             pg_advisory_unlock_all() or DISCARD ALL?); another runner may have migrated it at the same time', {schema}; \
             END IF; END$mt$;\n\
             SELECT pg_advisory_unlock_all();",
            key = self.schema.lock_key(),
            schema = self.schema.literal(),
        )
    }
}
