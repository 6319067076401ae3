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
    #[error("the tenants query failed: {0} (it must return one text column of schema names)")]
    Query(String),
    /// `--strict` and an invalid name was found.
    #[error("invalid tenant name(s) (--strict):{}", .0.iter().map(|e| format!("\n  - {e}")).collect::<String>())]
    Invalid(Vec<NameError>),
}

#[derive(QueryableByName)]
struct NameRow {
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    name: Option<String>,
    #[diesel(sql_type = Text)]
    r#type: String,
}

/// Reads the raw names from `source` (a query or pattern needs `conn`).
pub fn read_names(conn: &mut PgConnection, source: &TenantSource) -> Result<Vec<String>, DiscoveryError> {
    match source {
        TenantSource::List(names) => Ok(names.clone()),
        TenantSource::File(path) => read_file(path).map_err(|source| DiscoveryError::File {
            path: path.display().to_string(),
            source,
        }),
        TenantSource::Query(sql) => run_query(conn, sql),
        TenantSource::Pattern(pattern) => schemas_like(conn, pattern).map_err(|e| DiscoveryError::Query(e.to_string())),
    }
}

/// Validates, selects, de-duplicates and sorts names.
pub fn select(
    names: Vec<String>,
    only: &[String],
    exclude: &[String],
    strict: bool,
) -> Result<Discovered, DiscoveryError> {
    let mut found = Discovered::default();
    for name in names {
        match SchemaName::tenant(&name) {
            Ok(t) => found.tenants.push(t),
            Err(e) => found.invalid.push(e),
        }
    }
    if strict && !found.invalid.is_empty() {
        return Err(DiscoveryError::Invalid(found.invalid));
    }
    found.tenants.retain(|t| {
        (only.is_empty() || only.iter().any(|o| o == t.as_str())) && !exclude.iter().any(|x| x == t.as_str())
    });
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
    conn.batch_execute("BEGIN READ ONLY").map_err(failed)?;
    let wrapped = format!(
        "SELECT q.name::text AS name, pg_typeof(q.name)::text AS type FROM ({}\n) AS q(name)",
        sql.trim().trim_end_matches(';')
    );
    let rows = diesel::sql_query(wrapped).load::<NameRow>(conn);
    let _ = conn.batch_execute("ROLLBACK");
    let rows = rows.map_err(failed)?;
    if let Some(row) = rows.iter().find(|r| !TEXT_TYPES.contains(&r.r#type.as_str())) {
        return Err(DiscoveryError::Query(format!(
            "its first column is of type {}, not text",
            row.r#type
        )));
    }
    Ok(rows.into_iter().filter_map(|r| r.name).collect())
}

const TEXT_TYPES: [&str; 4] = ["text", "character varying", "name", "character"];

/// Existing schemas matching a `LIKE` pattern, never system schemas or `public`.
fn schemas_like(conn: &mut PgConnection, pattern: &str) -> QueryResult<Vec<String>> {
    diesel::sql_query(
        "SELECT nspname::text AS name, 'name' AS type FROM pg_namespace WHERE nspname LIKE $1 \
         AND nspname NOT LIKE 'pg\\_%' AND nspname NOT IN ('information_schema', 'public') ORDER BY 1",
    )
    .bind::<Text, _>(pattern)
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
        let names = ["b", "a", "b", "Bad", "c"].map(String::from).to_vec();
        let d = select(names.clone(), &[], &["c".into()], false).unwrap();
        assert_eq!(d.tenants.iter().map(|t| t.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(d.invalid.len(), 1);
        assert!(select(names.clone(), &[], &[], true).is_err());
        let only = select(names, &["b".into()], &[], false).unwrap();
        assert_eq!(only.tenants.len(), 1);
    }
}
