/*!
`down --run ID` and `up --resume`: runs that take their tenants from the run journal.

A rollback reverts, on each tenant a journaled run touched, exactly the migrations that run
applied there and that are still applied, newest first, with the `down.sql` this binary
ships or, when it does not know the migration, the `down.sql` the journal kept. It is refused
before anything changes when a later migration sits on top of one to revert (unless forced),
and when a migration to revert has no `down.sql` anywhere. Run again after an interruption,
it reverts only what is still applied: never more.
*/

use crate::catalog::TenantState;
use crate::error::{Blocked, Error, Refusal};
use crate::journal::{self, AppliedStep};
use crate::tenant::SchemaName;
use diesel::PgConnection;
use migrate_tenants_set::{DownSql, Migration, MigrationSet};
use std::collections::BTreeMap;

/// What to revert on each tenant, newest first.
#[derive(Debug, Default)]
pub(crate) struct Undo {
    by_tenant: BTreeMap<String, Vec<Migration>>,
}

impl Undo {
    /// Reads what run `id` applied from the journal in `schema`.
    pub(crate) fn read(
        conn: &mut PgConnection,
        schema: &SchemaName,
        id: i64,
        set: &MigrationSet,
    ) -> Result<Undo, Error> {
        let steps = journal::applied_by_run(conn, schema, id).map_err(|e| Error::Database {
            context: format!("reading run {id} from the run journal"),
            message: e.to_string(),
        })?;
        if steps.is_empty() {
            return Err(no_such_run(conn, schema, id));
        }
        // Every tenant the run changed is part of the rollback, even with nothing left to
        // revert (run again, it reports them unchanged).
        let mut by_tenant: BTreeMap<String, Vec<Migration>> = BTreeMap::new();
        for step in steps {
            let owned = step.owned.then(|| migration_of(&step, set));
            by_tenant.entry(step.tenant).or_default().extend(owned);
        }
        Ok(Undo { by_tenant })
    }

    /// The tenants the run changed.
    pub(crate) fn tenants(&self) -> Vec<String> {
        self.by_tenant.keys().cloned().collect()
    }

    /// What to revert on `tenant`, newest first.
    pub(crate) fn of(&self, tenant: &str) -> Vec<Migration> {
        self.by_tenant.get(tenant).cloned().unwrap_or_default()
    }

    /// Refuses the rollback before anything changes: a migration to revert has no `down.sql`,
    /// or (unless `force`) a migration the run did not apply sits on top of one it did.
    pub(crate) fn check(
        &self,
        tenants: &[SchemaName],
        states: &[TenantState],
        set: &MigrationSet,
        force: bool,
    ) -> Result<(), Error> {
        let mut blocked: Vec<Blocked> = Vec::new();
        let mut on_top: Vec<String> = Vec::new();
        for (tenant, state) in tenants.iter().zip(states) {
            let applied = state.applied_versions(set);
            let undo: Vec<&Migration> = self
                .by_tenant
                .get(tenant.as_str())
                .map(|ms| ms.iter().filter(|m| applied.contains(&m.version)).collect())
                .unwrap_or_default();
            for m in undo.iter().filter(|m| m.down == DownSql::Missing) {
                Blocked::add(&mut blocked, &m.dir_name, tenant.to_string());
            }
            let Some(oldest) = undo.iter().map(|m| m.version.as_str()).min() else {
                continue;
            };
            let later: Vec<String> = applied
                .iter()
                .filter(|v| v.as_str() > oldest && !undo.iter().any(|m| &m.version == *v))
                .map(|v| set.get(v).map_or_else(|| v.clone(), |m| m.dir_name.clone()))
                .collect();
            if !later.is_empty() {
                on_top.push(format!("{tenant}: {}", later.join(", ")));
            }
        }
        if !blocked.is_empty() {
            return Err(Error::Irreversible {
                command: "down",
                blocked,
            });
        }
        if on_top.is_empty() || force {
            return Ok(());
        }
        let shown: Vec<&str> = on_top.iter().take(10).map(String::as_str).collect();
        let more = on_top.len().saturating_sub(shown.len());
        Err(Error::Refused {
            refusal: Refusal::BuiltUpon,
            message: format!(
                "refusing to roll the run back: nothing was changed; on {} tenant(s), migrations applied after it \
                 sit on top of what it applied:\n  - {}{}",
                on_top.len(),
                shown.join("\n  - "),
                if more > 0 {
                    format!("\n  - and {more} more")
                } else {
                    String::new()
                }
            ),
        })
    }
}

/// The migration to revert: this binary's when it knows the version, else the journal's.
fn migration_of(step: &AppliedStep, set: &MigrationSet) -> Migration {
    if let Some(m) = set.get(&step.version) {
        return m.clone();
    }
    Migration {
        dir_name: step.name.clone(),
        version: step.version.clone(),
        up: String::new(),
        down: match step.down_sql.as_deref() {
            None => DownSql::Missing,
            Some(sql) if migrate_tenants_set::sql_lexer::split_statements(sql).is_ok_and(|s| s.is_empty()) => {
                DownSql::NoOp
            }
            Some(sql) => DownSql::Sql(sql.to_string()),
        },
        run_in_transaction: step.run_in_transaction,
    }
}

fn no_such_run(conn: &mut PgConnection, schema: &SchemaName, id: i64) -> Error {
    let known = journal::run_head(conn, schema, id).ok().flatten();
    let message = match known {
        Some((command, _)) => format!("run {id} ({command}) kept no applied migration: there is nothing to roll back"),
        None => format!("the run journal (schema {schema}) has no run {id}"),
    };
    Error::Refused {
        refusal: Refusal::NoSuchRun,
        message,
    }
}

/// Which run `up` resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resume {
    /// The newest `up` run before this one.
    Latest,
    /// This run.
    Run(i64),
}

/// What a resumed `up` takes from the run it resumes.
pub(crate) struct Resumed {
    /// The run resumed.
    pub(crate) id: i64,
    /// Its `--to` target, if it had one.
    pub(crate) target: Option<String>,
    /// The tenants to run again.
    pub(crate) tenants: Vec<String>,
    /// Every tenant it left unfinished (failed, skipped, never reached).
    pub(crate) unfinished: Vec<String>,
}

/// The tenants to run again: those that failed in the run to resume and, unless
/// `failed_only`, those it skipped or never reached.
pub(crate) fn resume_tenants(
    conn: &mut PgConnection,
    schema: &SchemaName,
    resume: Resume,
    failed_only: bool,
    current: Option<i64>,
) -> Result<Resumed, Error> {
    let db = journal::read_error;
    let refused = |message: String| Error::Refused {
        refusal: Refusal::NoSuchRun,
        message,
    };
    let id = match resume {
        Resume::Run(id) => id,
        Resume::Latest => journal::latest_run(conn, schema, "up", current)
            .map_err(db)?
            .ok_or_else(|| {
                refused(format!(
                    "the run journal (schema {schema}) has no earlier `up` run to resume"
                ))
            })?,
    };
    let target = match journal::run_head(conn, schema, id).map_err(db)? {
        Some((command, target)) if command == "up" => target,
        Some((command, _)) => {
            return Err(refused(format!(
                "run {id} is a `{command}` run; only an `up` run can be resumed"
            )))
        }
        None => return Err(refused(format!("the run journal (schema {schema}) has no run {id}"))),
    };
    let unfinished = journal::unfinished_tenants(conn, schema, id, false).map_err(db)?;
    let tenants = match failed_only {
        true => journal::unfinished_tenants(conn, schema, id, true).map_err(db)?,
        false => unfinished.clone(),
    };
    Ok(Resumed {
        id,
        target,
        tenants,
        unfinished,
    })
}
