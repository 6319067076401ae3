/*!
Tenant discovery: which schemas a run is about.

Exactly one source per run (a list, a file, a query, or a `LIKE` pattern over existing
schemas), then selection (`only`, `exclude`), de-duplication and sorting. Every name,
however it was found, goes through [`SchemaName::tenant`]; an invalid one is reported and
never executed.
*/

use crate::config::TenantSource;
use crate::tenant::{NameError, SchemaName};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;
use std::io::Read;

/// The tenants of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovered {
    /// Valid, selected tenant names, sorted and unique.
    pub tenants: Vec<SchemaName>,
    /// Names that were refused, with the reason.
    pub invalid: Vec<NameError>,
}

/// Discovery failed: the source could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The tenants file could not be read.
    #[error("cannot read the tenants file {path}: {source}")]
    File {
        /// The path given.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The tenants query failed.
    #[error("the tenants query failed: {0} (it must be one SELECT returning one text column of schema names; it runs as a subquery: SELECT ... FROM (<query>) q)")]
    Query(String),
    /// An invalid name in a strict selection (strict mode, or a list of names).
    #[error("invalid tenant name(s); no tenant was touched:{}", .0.iter().map(|e| format!("\n  - {e}")).collect::<String>())]
    Invalid(Vec<NameError>),
    /// Selected tenants the source did not return.
    #[error("selected tenant(s) {} not among the discovered tenants; nothing was changed", .0.join(", "))]
    NotFound(Vec<String>),
}

#[derive(QueryableByName)]
struct NameRow {
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    name: Option<String>,
    #[diesel(sql_type = Text)]
    r#type: String,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    columns: i32,
}

/// Reads names that need no database (a list, a file); `None` for sources that do.
pub fn read_offline(source: &TenantSource) -> Result<Option<Vec<String>>, DiscoveryError> {
    match source {
        TenantSource::List(names) => Ok(Some(names.clone())),
        TenantSource::File(path) => read_file(path).map(Some).map_err(|source| DiscoveryError::File {
            path: path.display().to_string(),
            source,
        }),
        TenantSource::Query(_) | TenantSource::Pattern(_) | TenantSource::AllTenants => Ok(None),
    }
}

/// Reads names from any source (a query or a pattern runs on `conn`).
pub fn read_from_database(conn: &mut PgConnection, source: &TenantSource) -> Result<Vec<String>, DiscoveryError> {
    match source {
        TenantSource::Query(sql) => run_query(conn, sql),
        TenantSource::Pattern(pattern) => schemas_like(conn, pattern).map_err(|e| DiscoveryError::Query(e.to_string())),
        TenantSource::AllTenants => schemas_with_history(conn).map_err(|e| DiscoveryError::Query(e.to_string())),
        other => Ok(read_offline(other)?.unwrap_or_default()),
    }
}

/// How discovered names are narrowed down.
#[derive(Debug, Clone, Copy)]
pub struct Selection<'a> {
    /// Only these (empty: all). Each must be among the discovered names.
    pub only: &'a [String],
    /// Never these.
    pub exclude: &'a [String],
    /// An invalid name fails discovery instead of being skipped.
    pub strict: bool,
    /// The shared schema, which is never a tenant.
    pub shared: &'a SchemaName,
    /// Only the tenants of part `i` of `n` (1-based), by a hash of each name.
    pub shard: Option<(u32, u32)>,
}

/// Validates, selects, de-duplicates and sorts names.
pub fn select(names: Vec<String>, selection: &Selection<'_>) -> Result<Discovered, DiscoveryError> {
    let mut found = Discovered::default();
    for name in names {
        match SchemaName::tenant(&name) {
            Ok(t) if t == *selection.shared => found.invalid.push(NameError::Shared(name)),
            Ok(t) => found.tenants.push(t),
            Err(e) => found.invalid.push(e),
        }
    }
    if selection.strict && !found.invalid.is_empty() {
        return Err(DiscoveryError::Invalid(found.invalid));
    }
    let unknown: Vec<String> = selection
        .only
        .iter()
        .filter(|o| !found.tenants.iter().any(|t| t.as_str() == o.as_str()))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Err(DiscoveryError::NotFound(unknown));
    }
    found.tenants.retain(|t| {
        let only = selection.only.is_empty() || selection.only.iter().any(|o| o == t.as_str());
        only && !selection.exclude.iter().any(|x| x == t.as_str())
    });
    if let Some((part, parts)) = selection.shard {
        found.tenants.retain(|t| t.shard(parts) == part);
    }
    found.tenants.sort();
    found.tenants.dedup();
    Ok(found)
}

fn read_file(path: &std::path::Path) -> std::io::Result<Vec<String>> {
    let text = if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        std::fs::read_to_string(path)?
    };
    Ok(parse_list(&text))
}

/// One name per line; `#` starts a comment; blank lines are ignored.
pub fn parse_list(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect()
}

/// Runs the tenants query in a read-only transaction; its first column must be text.
fn run_query(conn: &mut PgConnection, sql: &str) -> Result<Vec<String>, DiscoveryError> {
    let failed = |e: diesel::result::Error| DiscoveryError::Query(crate::harness::describe(&e, None));
    let query = single_statement(sql)?;
    conn.batch_execute("BEGIN READ ONLY").map_err(failed)?;
    let wrapped = format!(
        "SELECT q.name::text AS name, pg_typeof(q.name)::text AS type, \
         (SELECT count(*) FROM json_each(row_to_json(q)))::int AS columns FROM ({query}\n) AS q(name)"
    );
    let rows = diesel::sql_query(wrapped).load::<NameRow>(conn);
    let _ = conn.batch_execute("ROLLBACK");
    let rows = rows.map_err(failed)?;
    if let Some(row) = rows.iter().find(|r| r.columns != 1) {
        return Err(DiscoveryError::Query(format!(
            "it returns {} columns, not one",
            row.columns
        )));
    }
    if let Some(row) = rows.iter().find(|r| !TEXT_TYPES.contains(&r.r#type.as_str())) {
        return Err(DiscoveryError::Query(format!(
            "its column is of type {}, not text",
            row.r#type
        )));
    }
    Ok(rows.into_iter().filter_map(|r| r.name).collect())
}

/// The query's one statement, without its `;` and trailing comments.
fn single_statement(sql: &str) -> Result<&str, DiscoveryError> {
    let statements =
        migrate_tenants_set::sql_lexer::split_statements(sql).map_err(|e| DiscoveryError::Query(e.to_string()))?;
    match statements.as_slice() {
        [one] => Ok(one.text),
        other => Err(DiscoveryError::Query(format!(
            "it holds {} statements, not one SELECT",
            other.len()
        ))),
    }
}

const TEXT_TYPES: [&str; 4] = ["text", "character varying", "name", "character"];

/// Existing schemas matching a `LIKE` pattern, never system schemas or `public`.
fn schemas_like(conn: &mut PgConnection, pattern: &str) -> QueryResult<Vec<String>> {
    diesel::sql_query(
        "SELECT nspname::text AS name, 'name' AS type, 1 AS columns FROM pg_namespace WHERE nspname LIKE $1 \
         AND nspname NOT LIKE 'pg\\_%' AND nspname NOT IN ('information_schema', 'public') ORDER BY 1",
    )
    .bind::<Text, _>(pattern)
    .load::<NameRow>(conn)
    .map(|rows| rows.into_iter().filter_map(|r| r.name).collect())
}

/// Existing schemas holding a diesel history table, never system schemas or `public` (the
/// shared schema is then refused by selection, like any source's).
fn schemas_with_history(conn: &mut PgConnection) -> QueryResult<Vec<String>> {
    diesel::sql_query(
        "SELECT n.nspname::text AS name, 'name' AS type, 1 AS columns FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relname = '__diesel_schema_migrations' AND c.relkind IN ('r', 'p') \
         AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname NOT IN ('information_schema', 'public') ORDER BY 1",
    )
    .load::<NameRow>(conn)
    .map(|rows| rows.into_iter().filter_map(|r| r.name).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_files_skip_comments_and_blanks() {
        assert_eq!(
            parse_list("acme\n# comment\n\n globex  # trailing\n"),
            vec!["acme", "globex"]
        );
    }

    #[test]
    fn selection_sorts_dedups_and_reports_invalid() {
        let shared = SchemaName::shared("shared_stuff").unwrap();
        let names = ["b", "a", "b", "Bad", "c", "shared_stuff"].map(String::from).to_vec();
        let exclude = ["c".to_string()];
        let only = ["b".to_string()];
        let base = Selection {
            shard: None,
            only: &[],
            exclude: &exclude,
            strict: false,
            shared: &shared,
        };
        let d = select(names.clone(), &base).unwrap();
        assert_eq!(d.tenants.iter().map(|t| t.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(d.invalid.len(), 2, "Bad and the shared schema");
        assert!(select(names.clone(), &Selection { strict: true, ..base }).is_err());
        assert_eq!(
            select(names.clone(), &Selection { only: &only, ..base })
                .unwrap()
                .tenants
                .len(),
            1
        );
        let missing = ["zz".to_string()];
        assert!(matches!(
            select(names, &Selection { only: &missing, ..base }),
            Err(DiscoveryError::NotFound(_))
        ));
    }
}
