/*!
A schema's structure as sorted text lines, the same whatever the schema is called: tables and
their kinds, columns (type, nullability, default), constraints, indexes, views, sequences,
functions (arguments and a hash of the body), triggers, types and enum labels. The schema's
own name is replaced by `$S` in every definition, so two tenants with the same structure have
equal snapshots. `verify` compares a schema before and after `up` + `down`; `drift` compares
tenants with each other. The history table is left out.
*/

use crate::tenant::{quote_literal, SchemaName};
use diesel::prelude::*;
use diesel::sql_types::Text;

#[derive(QueryableByName)]
struct Line {
    #[diesel(sql_type = Text)]
    line: String,
}

/// The structure of `schema`, one sorted line per object or column.
pub(crate) fn schema(conn: &mut PgConnection, schema: &SchemaName) -> QueryResult<Vec<String>> {
    let sql = SNAPSHOT
        .replace("{schema}", &schema.literal())
        .replace("{prefix}", &quote_literal(&format!("{}.", schema.quoted())))
        .replace("{bare}", &quote_literal(&format!("{}.", schema.as_str())));
    diesel::sql_query(sql)
        .load::<Line>(conn)
        .map(|rows| rows.into_iter().map(|r| r.line).collect())
}

/// Whether the schema exists.
pub(crate) fn exists(conn: &mut PgConnection, schema: &SchemaName) -> QueryResult<bool> {
    #[derive(QueryableByName)]
    struct Flag {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        flag: bool,
    }
    diesel::sql_query(format!(
        "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = {}) AS flag",
        schema.literal()
    ))
    .get_result::<Flag>(conn)
    .map(|f| f.flag)
}

/// What lies outside any one tenant: schemas, extensions and where they live, and the
/// structure of `public`. A set that changes this is not confined to its tenant's schema.
pub(crate) fn outside(conn: &mut PgConnection, ignore: &[&SchemaName]) -> QueryResult<Vec<String>> {
    let ignored: Vec<String> = ignore.iter().map(|s| s.literal()).collect();
    let ignored = if ignored.is_empty() {
        "''".to_string()
    } else {
        ignored.join(", ")
    };
    let sql = format!(
        "SELECT line FROM ( \
           SELECT 'schema ' || nspname AS line FROM pg_namespace \
             WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema' AND nspname NOT IN ({ignored}) \
           UNION ALL SELECT 'extension ' || e.extname || ' in schema ' || n.nspname \
             FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace \
           UNION ALL SELECT 'role ' || rolname FROM pg_roles WHERE rolname NOT LIKE 'pg\\_%' \
         ) s ORDER BY 1"
    );
    let mut lines: Vec<String> = diesel::sql_query(sql)
        .load::<Line>(conn)?
        .into_iter()
        .map(|r| r.line)
        .collect();
    let public = SchemaName::shared("public").expect("a valid name");
    lines.extend(schema(conn, &public)?.into_iter().map(|l| format!("public: {l}")));
    Ok(lines)
}

/// Lines only in `before` (`-`) and only in `after` (`+`).
pub(crate) fn diff(before: &[String], after: &[String]) -> Vec<String> {
    let gone = before.iter().filter(|l| !after.contains(l)).map(|l| format!("- {l}"));
    let new = after.iter().filter(|l| !before.contains(l)).map(|l| format!("+ {l}"));
    gone.chain(new).collect()
}

const SNAPSHOT: &str = "
WITH ns AS (SELECT oid FROM pg_namespace WHERE nspname = {schema}),
rel AS (
  SELECT c.oid, c.relname, c.relkind FROM pg_class c, ns
  WHERE c.relnamespace = ns.oid AND c.relname <> '__diesel_schema_migrations'
    AND c.relname NOT LIKE '\\_\\_diesel\\_schema\\_migrations\\_%'
)
SELECT replace(replace(line, {prefix}, '$S.'), {bare}, '$S.') AS line FROM (
  SELECT 'relation ' || relname || ' kind ' || relkind::text AS line FROM rel WHERE relkind <> 'i'
  UNION ALL
  SELECT 'column ' || r.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
         || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
         || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
  FROM rel r JOIN pg_attribute a ON a.attrelid = r.oid
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
  WHERE a.attnum > 0 AND NOT a.attisdropped AND r.relkind IN ('r', 'p', 'v', 'm', 'f')
  UNION ALL
  SELECT 'constraint ' || r.relname || '.' || co.conname || ' ' || pg_get_constraintdef(co.oid)
  FROM pg_constraint co JOIN rel r ON r.oid = co.conrelid
  UNION ALL
  SELECT 'index ' || r.relname || ' ' || pg_get_indexdef(r.oid) FROM rel r WHERE r.relkind = 'i'
  UNION ALL
  SELECT 'view ' || r.relname || ' ' || pg_get_viewdef(r.oid) FROM rel r WHERE r.relkind IN ('v', 'm')
  UNION ALL
  SELECT 'function ' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ') returns '
         || pg_get_function_result(p.oid) || ' body ' || md5(coalesce(p.prosrc, ''))
  FROM pg_proc p, ns WHERE p.pronamespace = ns.oid
  UNION ALL
  SELECT 'trigger ' || r.relname || '.' || t.tgname || ' ' || pg_get_triggerdef(t.oid)
  FROM pg_trigger t JOIN rel r ON r.oid = t.tgrelid WHERE NOT t.tgisinternal
  UNION ALL
  SELECT 'type ' || t.typname || ' kind ' || t.typtype::text
         || coalesce(' labels ' || (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                                    FROM pg_enum e WHERE e.enumtypid = t.oid), '')
  FROM pg_type t, ns WHERE t.typnamespace = ns.oid AND t.typtype IN ('e', 'd', 'c', 'r')
    AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = t.typrelid AND c.relkind <> 'c')
) s ORDER BY 1";
