/*!
`mark applied VERSION` / `mark pending VERSION`: change a tenant's history without running
the migration (Alembic's `stamp`, Flyway's `baseline`/`repair`), under the tenant's lock,
journaled, and refused where it would plainly contradict the schema: marking applied a
migration whose tables do not exist, or pending one whose tables do.
*/

use crate::tenant::{quote_ident, quote_literal, SchemaName};
use migrate_tenants_set::sql_lexer::split_statements;
use migrate_tenants_set::Migration;

/// The tables `up.sql` creates in the tenant's schema (unqualified `CREATE TABLE` names).
pub(crate) fn created_tables(migration: &Migration) -> Vec<String> {
    let Ok(statements) = split_statements(&migration.up) else {
        return Vec::new();
    };
    statements
        .iter()
        .filter(|s| s.starts_with(&["create", "table"]) || s.starts_with(&["create", "unlogged", "table"]))
        .filter_map(|s| table_name(s.text))
        .collect()
}

/// The name after `CREATE [UNLOGGED] TABLE [IF NOT EXISTS]`, when it is unqualified.
fn table_name(text: &str) -> Option<String> {
    let mut rest = text.trim_start();
    for word in ["create", "unlogged", "table", "if", "not", "exists"] {
        let trimmed = rest.trim_start();
        if trimmed.len() >= word.len() && trimmed[..word.len()].eq_ignore_ascii_case(word) {
            rest = &trimmed[word.len()..];
        }
    }
    let rest = rest.trim_start();
    let name: String = if let Some(quoted) = rest.strip_prefix('"') {
        let end = quoted.find('"')?;
        if quoted[end + 1..].starts_with('.') {
            return None;
        }
        quoted[..end].to_string()
    } else {
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$' || c == '.'))
            .unwrap_or(rest.len());
        let name = &rest[..end];
        if name.is_empty() || name.contains('.') {
            return None;
        }
        name.to_ascii_lowercase()
    };
    Some(name)
}

/// A DO block that fails when marking `migration` on `schema` would contradict the schema:
/// marked applied while a table it creates is missing, or pending while one exists.
pub(crate) fn contradiction_check(schema: &SchemaName, migration: &Migration, applied: bool) -> String {
    let tables = created_tables(migration);
    if tables.is_empty() {
        return String::new();
    }
    let (test, what) = match applied {
        true => ("IS NULL", "does not exist"),
        false => ("IS NOT NULL", "exists"),
    };
    let mark = if applied { "applied" } else { "pending" };
    let checks: String = tables
        .iter()
        .map(|t| {
            let qualified = quote_literal(&format!("{}.{}", schema.quoted(), quote_ident(t)));
            let message = quote_literal(&format!(
                "marking {} {mark} would contradict the schema: it creates table {t}, which {what} in {schema}; \
                 nothing was changed (force it to mark anyway)",
                migration.dir_name
            ));
            format!("IF to_regclass({qualified}) {test} THEN RAISE EXCEPTION {message}; END IF;")
        })
        .collect();
    format!("DO $mt$BEGIN {checks} END$mt$;\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use migrate_tenants_set::DownSql;

    #[test]
    fn finds_unqualified_created_tables() {
        let m = Migration {
            dir_name: "1_x".into(),
            version: "1".into(),
            up: "CREATE TABLE users (id int);\ncreate table if not exists \"Odd Name\"(x int);\n\
                 CREATE TABLE other.t (id int);\nCREATE UNLOGGED TABLE cache(x int);\nCREATE INDEX i ON users (id);"
                .into(),
            down: DownSql::NoOp,
            run_in_transaction: true,
        };
        assert_eq!(created_tables(&m), ["users", "Odd Name", "cache"]);
    }
}
