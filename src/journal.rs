/*!
The run journal: what every changing run did, written as it goes, in tables the runner owns
(schema `migrate_tenants` by default).

- `runs`: one row per run (command and arguments without secrets, host, pid, binary version,
  migration source, start, end, outcome and counts). A run whose `finished_at` is NULL is
  running, or died.
- `run_tenants`: one row per selected tenant, `pending` when the run starts, its outcome
  when it is done (written every second and at the end).
- `steps`: one row per migration step. A step that succeeds is written **in the migration's
  own transaction** (with its history row), so the journal never claims a step that did not
  commit and never misses one that did; a failed step is written after its rollback. An
  applied step keeps the SHA-256 of its `up.sql` and the text of its `down.sql`, so
  `down --run` can undo it with any binary.

diesel's `__diesel_schema_migrations` stays the source of truth for what is applied; the
journal is history. Nothing here prints.
*/

use crate::error::Error;
use crate::report::{FleetReport, Outcome, RunInfo, TenantReport};
use crate::tenant::{quote_literal, SchemaName};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, Text};
use migrate_tenants_set::{DownSql, Migration};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

/// A string literal that means the same whatever `standard_conforming_strings` says (a
/// `down.sql` with backslashes must be kept byte for byte).
fn escaped_literal(value: &str) -> String {
    format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// The journal's default schema.
pub const DEFAULT_JOURNAL_SCHEMA: &str = "migrate_tenants";

/// How often outcomes of finished tenants are written while a run goes on.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// The journal's tables (`{s}`: the journal schema, quoted). Kept in the README. No foreign
/// keys: each step's check would lock the run's row from every worker's transaction (a
/// MultiXact per step); `steps.id` orders steps and needs no index of its own.
const DDL: &str = "
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.runs (
    id            bigserial PRIMARY KEY,
    command       text NOT NULL,
    arguments     text NOT NULL,
    host          text NOT NULL,
    pid           integer NOT NULL,
    tool_version  text NOT NULL,
    source        text NOT NULL,
    target_version varchar(50),
    db_user       text NOT NULL DEFAULT current_user,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    outcome       text,
    tenants       integer,
    changed       integer,
    unchanged     integer,
    failed        integer,
    skipped       integer
);
CREATE TABLE IF NOT EXISTS {s}.run_tenants (
    run_id          bigint NOT NULL,
    tenant          text NOT NULL,
    outcome         text NOT NULL DEFAULT 'pending',
    version_before  varchar(50),
    version_after   varchar(50),
    error           text,
    duration_ms     bigint,
    PRIMARY KEY (run_id, tenant)
);
CREATE TABLE IF NOT EXISTS {s}.steps (
    id                  bigint GENERATED ALWAYS AS IDENTITY,
    run_id              bigint NOT NULL,
    tenant              text NOT NULL,
    scope               text NOT NULL DEFAULT 'tenant',
    version             varchar(50) NOT NULL,
    name                text NOT NULL,
    direction           text NOT NULL,
    status              text NOT NULL,
    error               text,
    sqlstate            text,
    duration_ms         bigint,
    up_checksum         text,
    down_sql            text,
    run_in_transaction  boolean NOT NULL DEFAULT true,
    at                  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS steps_run_tenant ON {s}.steps (run_id, tenant);
CREATE INDEX IF NOT EXISTS steps_tenant_version ON {s}.steps (tenant, version);
";

/// The journal's DDL for the schema `schema` (what the runner creates on first use).
pub fn journal_ddl(schema: &str) -> String {
    let quoted = SchemaName::shared(schema).map_or_else(|_| schema.to_string(), |s| s.quoted());
    DDL.replace("{s}", &quoted)
}

/// The SHA-256 of a migration's `up.sql`, in hex (what the journal keeps).
pub fn checksum(sql: &str) -> String {
    Sha256::digest(sql.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Where a run writes its journal (none: `--no-journal`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JournalConfig {
    pub(crate) schema: SchemaName,
    /// The command line as the journal shows it (no secrets).
    pub(crate) arguments: String,
}

/// A run being journaled: what the harness needs to write a step row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JournalRun {
    schema: SchemaName,
    id: i64,
    /// Steps of the shared schema (never reverted by a rollback of the run).
    shared: bool,
}

/// What a journaled step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StepKind {
    Up,
    Down,
    MarkApplied,
    MarkPending,
}

impl StepKind {
    fn name(self) -> &'static str {
        match self {
            StepKind::Up => "up",
            StepKind::Down => "down",
            StepKind::MarkApplied => "mark applied",
            StepKind::MarkPending => "mark pending",
        }
    }
}

impl JournalRun {
    /// The run's id.
    pub(crate) fn id(&self) -> i64 {
        self.id
    }

    /// The same run, for the shared schema's steps.
    pub(crate) fn for_shared(&self) -> JournalRun {
        JournalRun {
            shared: true,
            ..self.clone()
        }
    }

    /// The statement that records a successful step; sent with the step's history change so
    /// both commit together. Its duration is the time since the step's query arrived.
    pub(crate) fn step_done(&self, tenant: &SchemaName, m: &Migration, kind: StepKind) -> String {
        self.insert(tenant, m, kind, "done", None, None)
    }

    /// The statement that records a failed step (sent after its rollback).
    pub(crate) fn step_failed(
        &self,
        tenant: &SchemaName,
        m: &Migration,
        kind: StepKind,
        error: &str,
        sqlstate: Option<&str>,
    ) -> String {
        self.insert(tenant, m, kind, "failed", Some(error), sqlstate)
    }

    fn insert(
        &self,
        tenant: &SchemaName,
        m: &Migration,
        kind: StepKind,
        status: &str,
        error: Option<&str>,
        sqlstate: Option<&str>,
    ) -> String {
        let text = |v: Option<&str>| v.map_or_else(|| "NULL".to_string(), escaped_literal);
        let down = match &m.down {
            DownSql::Missing => None,
            DownSql::NoOp => Some(""),
            DownSql::Sql(sql) => Some(sql.as_str()),
        };
        let up = kind == StepKind::Up;
        format!(
            "INSERT INTO {}.steps (run_id, tenant, scope, version, name, direction, status, error, sqlstate, \
             duration_ms, up_checksum, down_sql, run_in_transaction) VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}, \
             (extract(epoch FROM clock_timestamp() - statement_timestamp()) * 1000)::bigint, {}, {}, {})",
            self.schema.quoted(),
            self.id,
            escaped_literal(tenant.as_str()),
            if self.shared { "'shared'" } else { "'tenant'" },
            escaped_literal(&m.version),
            escaped_literal(&m.dir_name),
            escaped_literal(kind.name()),
            escaped_literal(status),
            text(error),
            text(sqlstate),
            text(up.then(|| checksum(&m.up)).as_deref()),
            text(if up { down } else { None }),
            m.run_in_transaction,
        )
    }
}

/// The journal of the run under way (kept by the fleet skeleton, on the control connection).
pub(crate) struct Journal {
    run: JournalRun,
    /// Finished tenants not yet written.
    pending: Vec<TenantReport>,
    flushed: Instant,
}

impl Journal {
    /// Creates the tables when needed and the run's row.
    pub(crate) fn begin(
        conn: &mut PgConnection,
        config: &JournalConfig,
        info: &RunInfo,
        target: Option<&str>,
    ) -> Result<Journal, Error> {
        ensure_tables(conn, &config.schema)?;
        let host = hostname();
        let row: IdRow = diesel::sql_query(format!(
            "INSERT INTO {}.runs (command, arguments, host, pid, tool_version, source, target_version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            config.schema.quoted()
        ))
        .bind::<Text, _>(info.command.name())
        .bind::<Text, _>(&config.arguments)
        .bind::<Text, _>(&host)
        .bind::<Integer, _>(std::process::id() as i32)
        .bind::<Text, _>(env!("CARGO_PKG_VERSION"))
        .bind::<Text, _>(info.source.to_string())
        .bind::<Nullable<Text>, _>(target)
        .get_result(conn)
        .map_err(|e| journal_error(&config.schema, "recording the run", &e))?;
        Ok(Journal {
            run: JournalRun {
                schema: config.schema.clone(),
                id: row.id,
                shared: false,
            },
            pending: Vec::new(),
            flushed: Instant::now(),
        })
    }

    /// What the workers need to write their steps.
    pub(crate) fn run(&self) -> &JournalRun {
        &self.run
    }

    /// Records the tenants the run selected, all `pending`.
    pub(crate) fn tenants(&mut self, conn: &mut PgConnection, tenants: &[String]) -> Result<(), Error> {
        diesel::sql_query(format!(
            "INSERT INTO {}.run_tenants (run_id, tenant) SELECT $1, t FROM unnest($2) AS t ON CONFLICT DO NOTHING",
            self.run.schema.quoted()
        ))
        .bind::<BigInt, _>(self.run.id)
        .bind::<Array<Text>, _>(tenants)
        .execute(conn)
        .map_err(|e| journal_error(&self.run.schema, "recording the run's tenants", &e))?;
        Ok(())
    }

    /// Records tenants a resumed run did not select but its parent left unfinished, as
    /// `skipped`, so that resuming this run later still finds them.
    pub(crate) fn carried(&mut self, conn: &mut PgConnection, tenants: &[String], from: i64) -> Result<(), Error> {
        diesel::sql_query(format!(
            "INSERT INTO {}.run_tenants (run_id, tenant, outcome, error) SELECT $1, t, 'skipped', $3 \
             FROM unnest($2) AS t ON CONFLICT DO NOTHING",
            self.run.schema.quoted()
        ))
        .bind::<BigInt, _>(self.run.id)
        .bind::<Array<Text>, _>(tenants)
        .bind::<Text, _>(format!("not selected; carried over unfinished from run {from}"))
        .execute(conn)
        .map_err(|e| journal_error(&self.run.schema, "recording the run's tenants", &e))?;
        Ok(())
    }

    /// Queues a finished tenant's outcome (written by [`Journal::flush_due`] or at the end).
    pub(crate) fn record(&mut self, report: &TenantReport) {
        self.pending.push(report.clone());
    }

    /// Writes the queued outcomes when the last write is a second old.
    pub(crate) fn flush_due(&mut self, conn: &mut PgConnection) {
        if !self.pending.is_empty() && self.flushed.elapsed() >= FLUSH_EVERY {
            self.flush(conn);
        }
    }

    /// Writes the queued outcomes (a journal that cannot be written is logged, never fatal:
    /// the migrations themselves are done and recorded in each tenant's history).
    fn flush(&mut self, conn: &mut PgConnection) {
        self.flushed = Instant::now();
        if self.pending.is_empty() {
            return;
        }
        let rows = std::mem::take(&mut self.pending);
        let column = |f: &dyn Fn(&TenantReport) -> Option<String>| rows.iter().map(f).collect::<Vec<_>>();
        let result = diesel::sql_query(format!(
            "INSERT INTO {}.run_tenants AS r (run_id, tenant, outcome, version_before, version_after, error, duration_ms) \
             SELECT $1, t, o, vb, va, e, d FROM unnest($2, $3, $4, $5, $6, $7) AS u(t, o, vb, va, e, d) \
             ON CONFLICT (run_id, tenant) DO UPDATE SET outcome = EXCLUDED.outcome, \
             version_before = EXCLUDED.version_before, version_after = EXCLUDED.version_after, \
             error = EXCLUDED.error, duration_ms = EXCLUDED.duration_ms",
            self.run.schema.quoted()
        ))
        .bind::<BigInt, _>(self.run.id)
        .bind::<Array<Text>, _>(rows.iter().map(|r| r.schema.to_string()).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(rows.iter().map(|r| outcome_name(&r.outcome).to_string()).collect::<Vec<_>>())
        .bind::<Array<Nullable<Text>>, _>(column(&|r| r.version_before.clone()))
        .bind::<Array<Nullable<Text>>, _>(column(&|r| r.version_after.clone()))
        .bind::<Array<Nullable<Text>>, _>(column(&|r| match &r.outcome {
            Outcome::Failed { error, .. } => Some(error.clone()),
            Outcome::Skipped { reason } => Some(reason.clone()),
            _ => None,
        }))
        .bind::<Array<BigInt>, _>(rows.iter().map(|r| r.elapsed_ms as i64).collect::<Vec<_>>())
        .execute(conn);
        if let Err(e) = result {
            log::warn!("could not write the run journal's tenant outcomes: {e}");
        }
    }

    /// Closes the run's row as `error`: it stopped with an error before reaching the tenants
    /// (what it did to the shared schema, if anything, is in its steps).
    pub(crate) fn abandon(self, conn: &mut PgConnection) {
        let result = diesel::sql_query(format!(
            "UPDATE {}.runs SET finished_at = now(), outcome = 'error' WHERE id = $1",
            self.run.schema.quoted()
        ))
        .bind::<BigInt, _>(self.run.id)
        .execute(conn);
        if let Err(e) = result {
            log::warn!("could not close run {} in the run journal: {e}", self.run.id);
        }
    }

    /// Writes every tenant's outcome (those written while the run went on again, with those
    /// settled without a worker) and closes the run's row.
    pub(crate) fn finish(mut self, conn: &mut PgConnection, report: &FleetReport) {
        self.pending = report.tenants.clone();
        self.flush(conn);
        let s = &report.summary;
        let result = diesel::sql_query(format!(
            "UPDATE {}.runs SET finished_at = now(), outcome = $2, tenants = $3, changed = $4, unchanged = $5, \
             failed = $6, skipped = $7 WHERE id = $1",
            self.run.schema.quoted()
        ))
        .bind::<BigInt, _>(self.run.id)
        .bind::<Text, _>(run_outcome(report))
        .bind::<Integer, _>(s.tenants as i32)
        .bind::<Integer, _>(s.changed as i32)
        .bind::<Integer, _>(s.unchanged as i32)
        .bind::<Integer, _>(s.failed as i32)
        .bind::<Integer, _>(s.skipped as i32)
        .execute(conn);
        if let Err(e) = result {
            log::warn!("could not close run {} in the run journal: {e}", self.run.id);
        }
    }
}

/// How the journal names a tenant's outcome.
fn outcome_name(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Unchanged => "unchanged",
        Outcome::Changed => "changed",
        Outcome::Failed { .. } => "failed",
        Outcome::Skipped { .. } => "skipped",
    }
}

/// How the journal names a run's outcome.
fn run_outcome(report: &FleetReport) -> &'static str {
    use crate::report::exit;
    match report.exit_code() {
        exit::SUCCESS => "succeeded",
        exit::UNREACHABLE => "server lost",
        exit::INTERRUPTED => "interrupted",
        _ => "failed",
    }
}

/// Creates the journal's tables unless they exist, under a transaction-level advisory lock
/// so that two runners starting at once do not race on `CREATE TABLE IF NOT EXISTS`.
fn ensure_tables(conn: &mut PgConnection, schema: &SchemaName) -> Result<(), Error> {
    if exists(conn, schema).map_err(|e| journal_error(schema, "looking for the run journal", &e))? {
        return Ok(());
    }
    let key = crate::tenant::journal_lock_key(schema.as_str());
    let ddl = DDL.replace("{s}", &schema.quoted());
    conn.batch_execute(&format!("BEGIN; SELECT pg_advisory_xact_lock({key});{ddl}COMMIT;"))
        .map_err(|e| {
            let _ = conn.batch_execute("ROLLBACK");
            journal_error(schema, "creating the run journal", &e)
        })
}

/// A failed read of the journal.
pub(crate) fn read_error(e: diesel::result::Error) -> Error {
    Error::Database {
        context: "reading the run journal".into(),
        message: e.to_string(),
    }
}

fn journal_error(schema: &SchemaName, what: &str, e: &diesel::result::Error) -> Error {
    Error::Journal(format!(
        "{what} in schema {schema}: {e} (give the role CREATE on the database or create the schema for it, \
         choose another journal schema, or turn the journal off)"
    ))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

#[derive(QueryableByName)]
struct IdRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

#[derive(QueryableByName)]
struct FlagRow {
    #[diesel(sql_type = Bool)]
    flag: bool,
}

/// One run, as `runs` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, QueryableByName)]
#[non_exhaustive]
pub struct RunRecord {
    /// The run's id (`runs show ID`, `up --resume ID`, `down --run ID`).
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// `up`, `down`, `redo`, `tenant create`, `tenant drop`, `mark`.
    #[diesel(sql_type = Text)]
    pub command: String,
    /// The command line (no secrets).
    #[diesel(sql_type = Text)]
    pub arguments: String,
    /// Where it ran.
    #[diesel(sql_type = Text)]
    pub host: String,
    /// Its process id there.
    #[diesel(sql_type = Integer)]
    pub pid: i32,
    /// The database role.
    #[diesel(sql_type = Text)]
    pub db_user: String,
    /// The migrate-tenants version.
    #[diesel(sql_type = Text)]
    pub tool_version: String,
    /// The migrations it ran.
    #[diesel(sql_type = Text)]
    pub source: String,
    /// When it started (UTC, ISO 8601).
    #[diesel(sql_type = Text)]
    pub started_at: String,
    /// When it finished (`None`: still running, or it died).
    #[diesel(sql_type = Nullable<Text>)]
    pub finished_at: Option<String>,
    /// `succeeded`, `failed`, `interrupted`, `server lost` (`None`: not finished).
    #[diesel(sql_type = Nullable<Text>)]
    pub outcome: Option<String>,
    /// Tenants selected.
    #[diesel(sql_type = BigInt)]
    pub tenants: i64,
    /// Tenants changed (or unchanged) so far.
    #[diesel(sql_type = BigInt)]
    pub ok: i64,
    /// Tenants failed so far.
    #[diesel(sql_type = BigInt)]
    pub failed: i64,
    /// Tenants skipped, or not reached (yet).
    #[diesel(sql_type = BigInt)]
    pub skipped: i64,
}

/// One tenant of a run, as `runs show` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, QueryableByName)]
#[non_exhaustive]
pub struct RunTenant {
    /// The tenant.
    #[diesel(sql_type = Text)]
    pub tenant: String,
    /// `pending` (not reached, or the run died first), `unchanged`, `changed`, `failed`, `skipped`.
    #[diesel(sql_type = Text)]
    pub outcome: String,
    /// Its newest version before the run.
    #[diesel(sql_type = Nullable<Text>)]
    pub version_before: Option<String>,
    /// Its newest version after the run.
    #[diesel(sql_type = Nullable<Text>)]
    pub version_after: Option<String>,
    /// Why it failed or was skipped.
    #[diesel(sql_type = Nullable<Text>)]
    pub error: Option<String>,
    /// How long it took.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub duration_ms: Option<i64>,
}

/// One migration step of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, QueryableByName)]
#[non_exhaustive]
pub struct StepRecord {
    /// The tenant (or the shared schema).
    #[diesel(sql_type = Text)]
    pub tenant: String,
    /// The migration's version.
    #[diesel(sql_type = Text)]
    pub version: String,
    /// The migration's directory name.
    #[diesel(sql_type = Text)]
    pub name: String,
    /// `up`, `down`, `mark applied`, `mark pending`.
    #[diesel(sql_type = Text)]
    pub direction: String,
    /// `done` or `failed`.
    #[diesel(sql_type = Text)]
    pub status: String,
    /// PostgreSQL's message, for a failed step.
    #[diesel(sql_type = Nullable<Text>)]
    pub error: Option<String>,
    /// The SQLSTATE, where known.
    #[diesel(sql_type = Nullable<Text>)]
    pub sqlstate: Option<String>,
    /// How long it took.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub duration_ms: Option<i64>,
    /// When it ended (UTC, ISO 8601).
    #[diesel(sql_type = Text)]
    pub at: String,
}

/// A run with its tenants and steps (`runs show ID`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RunDetail {
    /// The run.
    pub run: RunRecord,
    /// Its tenants, by name.
    pub tenants: Vec<RunTenant>,
    /// Its steps, in the order they ended.
    pub steps: Vec<StepRecord>,
}

const ISO: &str = "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'";

fn run_select(schema: &SchemaName) -> String {
    let s = schema.quoted();
    format!(
        "SELECT r.id, r.command, r.arguments, r.host, r.pid, r.db_user, r.tool_version, r.source, \
         to_char(r.started_at AT TIME ZONE 'UTC', {ISO}) AS started_at, \
         to_char(r.finished_at AT TIME ZONE 'UTC', {ISO}) AS finished_at, r.outcome, \
         c.tenants, c.ok, c.failed, c.skipped FROM {s}.runs r CROSS JOIN LATERAL ( \
           SELECT count(*) AS tenants, \
                  count(*) FILTER (WHERE t.outcome IN ('changed', 'unchanged')) AS ok, \
                  count(*) FILTER (WHERE t.outcome = 'failed') AS failed, \
                  count(*) FILTER (WHERE t.outcome IN ('skipped', 'pending')) AS skipped \
           FROM {s}.run_tenants t WHERE t.run_id = r.id) c"
    )
}

/// Whether the journal's tables exist.
pub(crate) fn exists(conn: &mut PgConnection, schema: &SchemaName) -> QueryResult<bool> {
    let table = quote_literal(&format!("{}.steps", schema.quoted()));
    let row: FlagRow =
        diesel::sql_query(format!("SELECT to_regclass({table}) IS NOT NULL AS flag")).get_result(conn)?;
    Ok(row.flag)
}

/// The newest `limit` runs, newest first (none when there is no journal yet).
pub(crate) fn list_runs(conn: &mut PgConnection, schema: &SchemaName, limit: i64) -> QueryResult<Vec<RunRecord>> {
    if !exists(conn, schema)? {
        return Ok(Vec::new());
    }
    diesel::sql_query(format!("{} ORDER BY r.id DESC LIMIT $1", run_select(schema)))
        .bind::<BigInt, _>(limit)
        .load(conn)
}

/// One run with its tenants and steps; `None` when there is no such run.
pub(crate) fn run_detail(conn: &mut PgConnection, schema: &SchemaName, id: i64) -> QueryResult<Option<RunDetail>> {
    if !exists(conn, schema)? {
        return Ok(None);
    }
    let run: Option<RunRecord> = diesel::sql_query(format!("{} WHERE r.id = $1", run_select(schema)))
        .bind::<BigInt, _>(id)
        .get_result(conn)
        .optional()?;
    let Some(run) = run else { return Ok(None) };
    let s = schema.quoted();
    let tenants = diesel::sql_query(format!(
        "SELECT tenant, outcome, version_before::text, version_after::text, error, duration_ms \
         FROM {s}.run_tenants WHERE run_id = $1 ORDER BY tenant"
    ))
    .bind::<BigInt, _>(id)
    .load(conn)?;
    let steps = diesel::sql_query(format!(
        "SELECT tenant, version::text, name, direction, status, error, sqlstate, duration_ms, \
         to_char(at AT TIME ZONE 'UTC', {ISO}) AS at FROM {s}.steps WHERE run_id = $1 ORDER BY id"
    ))
    .bind::<BigInt, _>(id)
    .load(conn)?;
    Ok(Some(RunDetail { run, tenants, steps }))
}

/// The id of the newest run of `command` other than `current` (`None`: there is none).
pub(crate) fn latest_run(
    conn: &mut PgConnection,
    schema: &SchemaName,
    command: &str,
    current: Option<i64>,
) -> QueryResult<Option<i64>> {
    if !exists(conn, schema)? {
        return Ok(None);
    }
    let row: Option<IdRow> = diesel::sql_query(format!(
        "SELECT id FROM {}.runs WHERE command = $1 AND id <> $2 AND outcome IS DISTINCT FROM 'error' \
         ORDER BY id DESC LIMIT 1",
        schema.quoted()
    ))
    .bind::<Text, _>(command)
    .bind::<BigInt, _>(current.unwrap_or(0))
    .get_result(conn)
    .optional()?;
    Ok(row.map(|r| r.id))
}

#[derive(QueryableByName)]
struct HeadRow {
    #[diesel(sql_type = Text)]
    command: String,
    #[diesel(sql_type = Nullable<Text>)]
    target_version: Option<String>,
}

/// Run `id`'s command and `up --to` target (`None`: no such run).
pub(crate) fn run_head(
    conn: &mut PgConnection,
    schema: &SchemaName,
    id: i64,
) -> QueryResult<Option<(String, Option<String>)>> {
    if !exists(conn, schema)? {
        return Ok(None);
    }
    let row: Option<HeadRow> = diesel::sql_query(format!(
        "SELECT command, target_version::text FROM {}.runs WHERE id = $1",
        schema.quoted()
    ))
    .bind::<BigInt, _>(id)
    .get_result(conn)
    .optional()?;
    Ok(row.map(|r| (r.command, r.target_version)))
}

#[derive(QueryableByName)]
struct NameRow {
    #[diesel(sql_type = Text)]
    tenant: String,
}

/// The tenants of run `id` that did not finish: failed ones, and (unless `failed_only`)
/// skipped ones and ones never reached.
pub(crate) fn unfinished_tenants(
    conn: &mut PgConnection,
    schema: &SchemaName,
    id: i64,
    failed_only: bool,
) -> QueryResult<Vec<String>> {
    let outcomes: &[&str] = if failed_only {
        &["failed"]
    } else {
        &["failed", "skipped", "pending"]
    };
    let rows: Vec<NameRow> = diesel::sql_query(format!(
        "SELECT tenant FROM {}.run_tenants WHERE run_id = $1 AND outcome = ANY($2) ORDER BY tenant",
        schema.quoted()
    ))
    .bind::<BigInt, _>(id)
    .bind::<Array<Text>, _>(outcomes)
    .load(conn)?;
    Ok(rows.into_iter().map(|r| r.tenant).collect())
}

/// A migration a run applied on a tenant, as the journal kept it.
#[derive(Debug, Clone, QueryableByName)]
pub(crate) struct AppliedStep {
    #[diesel(sql_type = Text)]
    pub(crate) tenant: String,
    #[diesel(sql_type = Text)]
    pub(crate) version: String,
    #[diesel(sql_type = Text)]
    pub(crate) name: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub(crate) down_sql: Option<String>,
    #[diesel(sql_type = Bool)]
    pub(crate) run_in_transaction: bool,
    /// Still the run's to revert: not reverted since by another run, nor applied again.
    #[diesel(sql_type = Bool)]
    pub(crate) owned: bool,
}

/// What run `id` applied on each tenant, newest first: its successful `up` steps, each marked
/// `owned` unless the same run had reverted it first (a `redo`), a later run reverted it (a
/// rollback; a later redo does not count) or a later run applied it again.
pub(crate) fn applied_by_run(conn: &mut PgConnection, schema: &SchemaName, id: i64) -> QueryResult<Vec<AppliedStep>> {
    let s = schema.quoted();
    let same = "x.tenant = u.tenant AND x.version = u.version AND x.status = 'done'";
    // A redo run's re-apply of what it had just reverted: that run did not add it.
    let same_run_reverted_first = format!(
        "SELECT 1 FROM {s}.steps x WHERE {same} AND x.run_id = u.run_id AND x.direction = 'down' AND x.id < u.id"
    );
    // Reverted later by another run (and not re-applied by that same run, as a redo does).
    let later_run_reverted = format!(
        "SELECT 1 FROM {s}.steps x WHERE {same} AND x.run_id <> u.run_id AND x.id > u.id \
         AND x.direction IN ('down', 'mark pending') AND NOT EXISTS (SELECT 1 FROM {s}.steps y \
         WHERE y.run_id = x.run_id AND y.tenant = x.tenant AND y.version = x.version AND y.status = 'done' \
         AND y.direction IN ('up', 'mark applied') AND y.id > x.id)"
    );
    // Applied again by another run (after a revert the journal did not see), unless that run
    // had reverted it first (a redo).
    let later_run_applied = format!(
        "SELECT 1 FROM {s}.steps x WHERE {same} AND x.run_id <> u.run_id AND x.id > u.id \
         AND x.direction IN ('up', 'mark applied') AND NOT EXISTS (SELECT 1 FROM {s}.steps y \
         WHERE y.run_id = x.run_id AND y.tenant = x.tenant AND y.version = x.version AND y.status = 'done' \
         AND y.direction = 'down' AND y.id < x.id)"
    );
    diesel::sql_query(format!(
        "SELECT u.tenant, u.version::text, u.name, u.down_sql, u.run_in_transaction, \
         NOT EXISTS ({same_run_reverted_first}) AND NOT EXISTS ({later_run_reverted}) \
         AND NOT EXISTS ({later_run_applied}) AS owned FROM {s}.steps u \
         WHERE u.run_id = $1 AND u.scope = 'tenant' AND u.direction = 'up' AND u.status = 'done' \
         ORDER BY u.tenant, u.version DESC"
    ))
    .bind::<BigInt, _>(id)
    .load(conn)
}

/// Applied migrations whose `up.sql` changed since they were applied: for each tenant and
/// version among `versions`, the journal's newest checksum differs from `checksums`.
pub(crate) fn checksum_mismatches(
    conn: &mut PgConnection,
    schema: &SchemaName,
    tenants: &[String],
    versions: &[String],
    checksums: &[String],
) -> QueryResult<Vec<(String, String)>> {
    if !exists(conn, schema)? {
        return Ok(Vec::new());
    }
    let rows: Vec<ChecksumWithSums> = diesel::sql_query(format!(
        "SELECT DISTINCT ON (s.tenant, s.version) s.tenant, s.version::text, s.up_checksum, c.sum \
         FROM {}.steps s JOIN unnest($2, $3) AS c(version, sum) ON c.version = s.version \
         WHERE s.tenant = ANY($1) AND s.direction = 'up' AND s.status = 'done' AND s.up_checksum IS NOT NULL \
         ORDER BY s.tenant, s.version, s.id DESC",
        schema.quoted()
    ))
    .bind::<Array<Text>, _>(tenants)
    .bind::<Array<Text>, _>(versions)
    .bind::<Array<Text>, _>(checksums)
    .load(conn)?;
    Ok(rows
        .into_iter()
        .filter(|r| r.up_checksum != r.sum)
        .map(|r| (r.tenant, r.version))
        .collect())
}

#[derive(QueryableByName)]
struct ChecksumWithSums {
    #[diesel(sql_type = Text)]
    tenant: String,
    #[diesel(sql_type = Text)]
    version: String,
    #[diesel(sql_type = Text)]
    up_checksum: String,
    #[diesel(sql_type = Text)]
    sum: String,
}
