/*!
The catalog pass: the state of every tenant in a few set-based queries.

Before a worker takes a connection and a lock for a tenant, the runner reads, for the
whole fleet at once, which schemas exist, which have a history table, and which versions
each has applied (batched `UNION ALL` reads, [`BATCH`] tables per query, each in its own
transaction so a stock server's lock table is never exhausted). Up-to-date tenants then
cost nothing more. It is an optimisation only: workers re-read the history under the
tenant's lock before changing anything.

Per tenant it keeps a compact summary (a bitset of applied known migrations plus any
unknown versions), so memory stays small at tens of thousands of tenants.
*/

use crate::harness::HISTORY_TABLE;
use crate::tenant::SchemaName;
use diesel::prelude::*;
use diesel::sql_types::{Array, Bool, Text};
use migrate_tenants_set::MigrationSet;
use std::collections::HashMap;

/// History tables read per query (and per transaction).
pub const BATCH: usize = 250;

/// What the catalog says about one tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantState {
    /// The schema exists.
    pub exists: bool,
    /// It has a `__diesel_schema_migrations` table.
    pub has_history: bool,
    /// Its history could not be read here (no privilege, or it changed under the catalog
    /// pass): a worker reads it on the tenant's own connection and reports what it finds.
    pub unreadable: bool,
    /// Bit i set: the set's migration i is applied.
    applied: Vec<u64>,
    /// Applied versions the set does not know.
    pub unknown: Vec<String>,
}

impl TenantState {
    /// Whether the set's migration at `index` is applied.
    pub fn is_applied(&self, index: usize) -> bool {
        self.applied
            .get(index / 64)
            .is_some_and(|w| w & (1 << (index % 64)) != 0)
    }

    fn mark(&mut self, index: usize) {
        if self.applied.len() <= index / 64 {
            self.applied.resize(index / 64 + 1, 0);
        }
        self.applied[index / 64] |= 1 << (index % 64);
    }

    /// Applied versions (known and unknown), newest first.
    pub fn applied_versions(&self, set: &MigrationSet) -> Vec<String> {
        let mut versions: Vec<String> = set
            .migrations()
            .iter()
            .enumerate()
            .filter(|(i, _)| self.is_applied(*i))
            .map(|(_, m)| m.version.clone())
            .chain(self.unknown.iter().cloned())
            .collect();
        versions.sort_by(|a, b| b.cmp(a));
        versions
    }
}

#[derive(QueryableByName)]
struct SchemaRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Bool)]
    has_history: bool,
    #[diesel(sql_type = Bool)]
    readable: bool,
}

#[derive(QueryableByName)]
struct HistoryRow {
    #[diesel(sql_type = Text)]
    schema: String,
    #[diesel(sql_type = Text)]
    version: String,
}

/// Reads the state of `tenants` (in the same order) with one catalog query and one
/// history query per [`BATCH`] tenants.
pub fn read_states(
    conn: &mut PgConnection,
    tenants: &[SchemaName],
    set: &MigrationSet,
) -> QueryResult<Vec<TenantState>> {
    let index: HashMap<&str, usize> = tenants.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
    let mut states = vec![TenantState::default(); tenants.len()];
    let names: Vec<&str> = tenants.iter().map(SchemaName::as_str).collect();
    let rows: Vec<SchemaRow> = diesel::sql_query(format!(
        "SELECT n.nspname::text AS name, c.oid IS NOT NULL AS has_history, \
         has_schema_privilege(n.oid, 'USAGE') AND (c.oid IS NULL OR has_table_privilege(c.oid, 'SELECT')) AS readable \
         FROM pg_namespace n LEFT JOIN pg_class c ON c.relnamespace = n.oid \
         AND c.relname = '{HISTORY_TABLE}' AND c.relkind IN ('r', 'p') \
         WHERE n.nspname = ANY($1)"
    ))
    .bind::<Array<Text>, _>(&names)
    .load(conn)?;
    for row in rows {
        if let Some(&i) = index.get(row.name.as_str()) {
            let unreadable = !row.readable;
            states[i] = TenantState {
                exists: true,
                has_history: row.has_history,
                unreadable,
                ..TenantState::default()
            };
        }
    }
    let known: HashMap<&str, usize> = set
        .migrations()
        .iter()
        .enumerate()
        .map(|(i, m)| (m.version.as_str(), i))
        .collect();
    let readable: Vec<&SchemaName> = tenants
        .iter()
        .zip(&states)
        .filter(|(_, s)| s.has_history && !s.unreadable)
        .map(|(t, _)| t)
        .collect();
    for chunk in readable.chunks(BATCH) {
        let rows = match history_batch(conn, chunk) {
            Ok(rows) => rows,
            Err(e) => {
                // A table dropped or locked down since the first query: leave these
                // tenants to the workers, which report each one precisely.
                log::debug!("catalog pass: a batch of {} history tables failed: {e}", chunk.len());
                chunk.iter().for_each(|t| states[index[t.as_str()]].unreadable = true);
                continue;
            }
        };
        for row in rows {
            let Some(&t) = index.get(row.schema.as_str()) else {
                continue;
            };
            match known.get(row.version.as_str()) {
                Some(&m) => states[t].mark(m),
                None => states[t].unknown.push(row.version),
            }
        }
    }
    Ok(states)
}

fn history_batch(conn: &mut PgConnection, schemas: &[&SchemaName]) -> QueryResult<Vec<HistoryRow>> {
    let sql = schemas
        .iter()
        .map(|s| {
            format!(
                "SELECT {}::text AS schema, version::text AS version FROM {}.{HISTORY_TABLE}",
                s.literal(),
                s.quoted()
            )
        })
        .collect::<Vec<_>>()
        .join("\nUNION ALL ");
    diesel::sql_query(sql).load(conn)
}
