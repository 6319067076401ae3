/*!
`verify`: proves, on scratch schemas and never on a tenant, that a set is safe to run per
tenant and that its `down.sql` files really undo their `up.sql`.

Everything runs in one transaction per scratch schema that is always rolled back, so nothing
the set does (objects in `public`, extensions, schemas with fixed names) is left behind. On a
first scratch schema each migration is applied, its schema snapshotted, reverted, compared with
the snapshot from before it, and applied again (each action under a savepoint, so one failure
does not hide the next). On a second one the whole set is applied, and everything outside that
schema (schemas, extensions and their placement, roles, the structure of `public`) is compared
with how it was before: the isolation proof.

Limits: a migration that runs outside a transaction is verified inside this one with
`CONCURRENTLY` removed (the same index, built the blocking way; said in the notes); one that
cannot run in a transaction otherwise (`VACUUM`, ...) is skipped (noted). A set that uses an
enum value added by an earlier migration fails here with PostgreSQL's own error (it refuses
that within one transaction), reported as `up-failed`. Against a live database, the
transactions hold their locks until they roll back: `--ephemeral` is the better place.
*/

use crate::config::RunConfig;
use crate::database::Database;
use crate::error::Error;
use crate::harness::{HarnessError, TenantHarness};
use crate::snapshot;
use crate::tenant::SchemaName;
use diesel::connection::SimpleConnection;
use migrate_tenants_set::{DownSql, Migration, MigrationSet};
use serde::Serialize;

/// Something `verify` found wrong with a migration or the set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Problem {
    /// The migration's directory name (none for the set as a whole).
    pub migration: Option<String>,
    /// `up-failed`, `down-failed`, `down-does-not-restore`, `reapply-failed` or
    /// `outside-tenant-schema`.
    pub kind: &'static str,
    /// What happened.
    pub message: String,
    /// The structural differences (`- ` gone, `+ ` new), when there are any.
    pub differences: Vec<String>,
}

/// The result of `verify`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Migrations in the set.
    pub migrations: usize,
    /// Migrations whose `down.sql` was checked to restore the schema.
    pub reversible_checked: usize,
    /// What is wrong (empty: the set is safe per tenant and every `down.sql` undoes its `up.sql`).
    pub problems: Vec<Problem>,
    /// What could not be checked, and why.
    pub notes: Vec<String>,
}

impl VerifyReport {
    /// Whether nothing is wrong.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Verifies the tenant set of `config` on scratch schemas of its database.
pub(crate) fn verify(config: &RunConfig) -> Result<VerifyReport, Error> {
    let mut db = Database::connect(&config.connector, 1, config.connect_timeout)?;
    let set = &config.migrations;
    let mut report = VerifyReport {
        migrations: set.migrations().len(),
        ..VerifyReport::default()
    };
    let run = fastrand::u32(..);
    let scratch = |suffix: &str| {
        SchemaName::tenant(&format!(
            "migrate_tenants_verify_{}_{run:x}_{suffix}",
            std::process::id()
        ))
        .map_err(|e| Error::Config(e.to_string()))
    };
    let (first, second) = (scratch("a")?, scratch("b")?);
    let runnable = runnable_copies(set, &mut report.notes);
    let first_result = each_reverts(&mut db, &first, config, &runnable, &mut report);
    let second_result = first_result
        .is_ok()
        .then(|| stays_inside(&mut db, &second, config, &runnable, &mut report));
    // Rolled back in every path; but a migration that ended verify's transaction itself
    // (only possible with a set that skipped validation) would have committed the scratch
    // schema: it is dropped whatever happened.
    for schema in [&first, &second] {
        let _ = db
            .control
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", schema.quoted()));
    }
    first_result.map_err(|e| database("on the first scratch schema", e))?;
    if let Some(result) = second_result {
        result.map_err(|e| database("on the second scratch schema", e))?;
    }
    Ok(report)
}

fn database(context: &str, e: HarnessError) -> Error {
    Error::Database {
        context: format!("verifying {context}"),
        message: e.to_string(),
    }
}

/// Each migration as it can run inside one transaction (`CONCURRENTLY` removed), or `None`
/// with a note when it cannot.
fn runnable_copies(set: &MigrationSet, notes: &mut Vec<String>) -> Vec<Option<Migration>> {
    let mut copies = Vec::new();
    for m in set.migrations() {
        if m.run_in_transaction {
            copies.push(Some(m.clone()));
            continue;
        }
        let up = without_concurrently(&m.up);
        let down = match &m.down {
            DownSql::Sql(sql) => without_concurrently(sql).map(DownSql::Sql),
            other => Some(other.clone()),
        };
        match (up, down) {
            (Some(up), Some(down)) => {
                notes.push(format!(
                    "{}: runs outside a transaction; verified inside one with CONCURRENTLY removed",
                    m.dir_name
                ));
                copies.push(Some(Migration {
                    up,
                    down,
                    run_in_transaction: true,
                    ..m.clone()
                }));
            }
            _ => {
                notes.push(format!(
                    "{}: runs outside a transaction and cannot run inside one: not verified",
                    m.dir_name
                ));
                copies.push(None);
            }
        }
    }
    copies
}

/// `sql` with its `CONCURRENTLY` keyword removed, when it is a concurrent index statement.
fn without_concurrently(sql: &str) -> Option<String> {
    let lower = sql.to_ascii_lowercase();
    let at = lower.find(" concurrently")?;
    let words: Vec<&str> = lower.split_whitespace().take(5).collect();
    let index_statement = words
        .first()
        .is_some_and(|w| *w == "reindex" || *w == "create" || *w == "drop")
        && words.iter().any(|w| *w == "index" || *w == "reindex");
    index_statement.then(|| format!("{}{}", &sql[..at], &sql[at + " concurrently".len()..]))
}

/// Runs `action` under a savepoint; on failure the transaction goes back to it.
fn attempt(
    h: &mut TenantHarness<'_>,
    action: impl FnOnce(&mut TenantHarness<'_>) -> Result<(), HarnessError>,
) -> Result<(), String> {
    h.execute("SAVEPOINT migrate_tenants_verify")
        .map_err(|e| e.to_string())?;
    match action(h) {
        Ok(()) => h
            .execute("RELEASE SAVEPOINT migrate_tenants_verify")
            .map_err(|e| e.to_string()),
        Err(e) => {
            let _ = h.execute("ROLLBACK TO SAVEPOINT migrate_tenants_verify");
            Err(e.to_string())
        }
    }
}

fn snap(h: &mut TenantHarness<'_>, schema: &SchemaName) -> Result<Vec<String>, HarnessError> {
    h.with_conn(|conn| snapshot::schema(conn, schema))
        .map_err(|e| HarnessError::Database(format!("reading the scratch schema's catalog: {e}")))
}

/// Up, snapshot, down, compare, up again: for every migration, on `schema`.
fn each_reverts(
    db: &mut Database,
    schema: &SchemaName,
    config: &RunConfig,
    runnable: &[Option<Migration>],
    report: &mut VerifyReport,
) -> Result<(), HarnessError> {
    let mut h = TenantHarness::lock(&mut db.control, schema, &config.settings, None)?;
    h.execute("BEGIN")?;
    let result = (|| {
        h.prepare(true)?;
        for m in runnable.iter().flatten() {
            let before = snap(&mut h, schema)?;
            if let Err(e) = attempt(&mut h, |h| h.apply(m, true)) {
                report.problems.push(problem(m, "up-failed", e, Vec::new()));
                break; // what follows builds on it
            }
            if m.down == DownSql::Missing {
                continue;
            }
            if let Err(e) = attempt(&mut h, |h| h.revert(m, true)) {
                report.problems.push(problem(m, "down-failed", e, Vec::new()));
                continue;
            }
            let restored = snap(&mut h, schema)?;
            report.reversible_checked += 1;
            if restored != before {
                let message = "down.sql does not restore the schema as it was before up.sql".to_string();
                report.problems.push(problem(
                    m,
                    "down-does-not-restore",
                    message,
                    snapshot::diff(&before, &restored),
                ));
            }
            if let Err(e) = attempt(&mut h, |h| h.apply(m, true)) {
                report.problems.push(problem(m, "reapply-failed", e, Vec::new()));
                break;
            }
        }
        Ok(())
    })();
    let _ = h.execute("ROLLBACK");
    h.release()?;
    result
}

/// The whole set on `schema`; reports what changed outside it.
fn stays_inside(
    db: &mut Database,
    schema: &SchemaName,
    config: &RunConfig,
    runnable: &[Option<Migration>],
    report: &mut VerifyReport,
) -> Result<(), HarnessError> {
    let outside = |conn: &mut diesel::PgConnection| {
        snapshot::outside(conn, &[schema], &config.shared.schema)
            .map_err(|e| HarnessError::Database(format!("reading the database's catalog: {e}")))
    };
    let mut h = TenantHarness::lock(&mut db.control, schema, &config.settings, None)?;
    h.execute("BEGIN")?;
    let result = (|| {
        let before = h.with_conn(outside)?;
        h.prepare(true)?;
        for m in runnable.iter().flatten() {
            if attempt(&mut h, |h| h.apply(m, true)).is_err() {
                break; // already reported on the first scratch schema
            }
        }
        let after = h.with_conn(outside)?;
        let differences = snapshot::diff(&before, &after);
        if !differences.is_empty() {
            report.problems.push(Problem {
                migration: None,
                kind: "outside-tenant-schema",
                message: "the set creates or changes objects outside the tenant's schema: every tenant would \
                          share (or fight over) them; move them to the shared migrations"
                    .into(),
                differences,
            });
        }
        Ok(())
    })();
    let _ = h.execute("ROLLBACK");
    h.release()?;
    result
}

fn problem(m: &Migration, kind: &'static str, message: String, differences: Vec<String>) -> Problem {
    Problem {
        migration: Some(m.dir_name.clone()),
        kind,
        message,
        differences,
    }
}
