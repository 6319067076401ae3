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

/// The structure of `schema`, one sorted line per object or column. Call it inside a
/// transaction: `search_path` is pinned to `pg_catalog` for the rest of it, so that every
/// definition names its schemas the same way whatever path the session had.
pub(crate) fn schema(conn: &mut PgConnection, schema: &SchemaName) -> QueryResult<Vec<String>> {
    use diesel::connection::SimpleConnection;
    conn.batch_execute("SELECT set_config('search_path', 'pg_catalog', true)")?;
    // The schema's own name becomes $S where it qualifies a name (and only there: a table
    // `invoices` in tenant `es` stays `invoices`).
    let sql = SNAPSHOT
        .replace("{schema}", &schema.literal())
        .replace("{prefix}", &quote_literal(&format!("{}.", schema.quoted())))
        .replace(
            "{bare}",
            &quote_literal(&format!("(^|[^[:alnum:]_$\"]){}\\.", schema.as_str())),
        );
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

/// What lies outside any one tenant: schemas, extensions and where they live, roles, and the
/// structure of `public` and of the shared schema. A set that changes this is not confined to
/// its tenant's schema. Inside a transaction, like [`schema`].
pub(crate) fn outside(
    conn: &mut PgConnection,
    ignore: &[&SchemaName],
    shared: &SchemaName,
) -> QueryResult<Vec<String>> {
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
    for shown in std::iter::once(&public).chain((shared != &public).then_some(shared)) {
        lines.extend(schema(conn, shown)?.into_iter().map(|l| format!("{shown}: {l}")));
    }
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
SELECT regexp_replace(replace(line, {prefix}, '$S.'), {bare}, '\\1$S.', 'g') AS line FROM (
  SELECT 'relation ' || rel.relname || ' kind ' || rel.relkind::text || ' persistence ' || c.relpersistence::text
         || CASE WHEN c.relrowsecurity THEN ' row security' ELSE '' END
         || CASE WHEN c.relforcerowsecurity THEN ' forced' ELSE '' END AS line
  FROM rel JOIN pg_class c ON c.oid = rel.oid WHERE rel.relkind NOT IN ('i', 'I')
  UNION ALL
  SELECT 'sequence ' || r.relname || ' ' || format_type(q.seqtypid, NULL) || ' start ' || q.seqstart
         || ' increment ' || q.seqincrement || ' min ' || q.seqmin || ' max ' || q.seqmax
         || ' cache ' || q.seqcache || CASE WHEN q.seqcycle THEN ' cycle' ELSE '' END
  FROM rel r JOIN pg_sequence q ON q.seqrelid = r.oid
  UNION ALL
  SELECT 'policy ' || r.relname || '.' || p.polname || ' ' || p.polcmd::text
         || CASE WHEN p.polpermissive THEN ' permissive' ELSE ' restrictive' END
         || coalesce(' using ' || pg_get_expr(p.polqual, p.polrelid), '')
         || coalesce(' check ' || pg_get_expr(p.polwithcheck, p.polrelid), '')
  FROM pg_policy p JOIN rel r ON r.oid = p.polrelid
  UNION ALL
  SELECT 'column ' || r.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
         || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
         || CASE a.attidentity WHEN 'a' THEN ' identity always' WHEN 'd' THEN ' identity by default' ELSE '' END
         || CASE WHEN a.attgenerated = 's' THEN ' generated' ELSE '' END
         || coalesce(' collate ' || (SELECT co.collname::text FROM pg_collation co
                                     WHERE co.oid = a.attcollation AND a.attcollation <> 100), '')
         || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
  FROM rel r JOIN pg_attribute a ON a.attrelid = r.oid
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
  WHERE a.attnum > 0 AND NOT a.attisdropped AND r.relkind IN ('r', 'p', 'v', 'm', 'f')
  UNION ALL
  SELECT 'constraint ' || r.relname || '.' || co.conname || ' ' || pg_get_constraintdef(co.oid)
  FROM pg_constraint co JOIN rel r ON r.oid = co.conrelid
  UNION ALL
  SELECT 'index ' || r.relname || ' ' || pg_get_indexdef(r.oid)
         || CASE WHEN i.indisvalid THEN '' ELSE ' INVALID' END
  FROM rel r JOIN pg_index i ON i.indexrelid = r.oid WHERE r.relkind IN ('i', 'I')
  UNION ALL
  SELECT 'view ' || r.relname || ' ' || pg_get_viewdef(r.oid) FROM rel r WHERE r.relkind IN ('v', 'm')
  UNION ALL
  SELECT CASE p.prokind WHEN 'p' THEN 'procedure ' WHEN 'a' THEN 'aggregate ' WHEN 'w' THEN 'window ' ELSE 'function ' END
         || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'
         || coalesce(' returns ' || pg_get_function_result(p.oid), '')
         || ' language ' || (SELECT l.lanname::text FROM pg_language l WHERE l.oid = p.prolang)
         || ' ' || p.provolatile::text || CASE WHEN p.prosecdef THEN ' security definer' ELSE '' END
         || coalesce(' set ' || array_to_string(p.proconfig, ','), '')
         || ' body ' || md5(coalesce(p.prosrc, ''))
  FROM pg_proc p, ns WHERE p.pronamespace = ns.oid
  UNION ALL
  SELECT 'trigger ' || r.relname || '.' || t.tgname || ' ' || pg_get_triggerdef(t.oid)
         || CASE WHEN t.tgenabled = 'D' THEN ' DISABLED' ELSE '' END
  FROM pg_trigger t JOIN rel r ON r.oid = t.tgrelid WHERE NOT t.tgisinternal
  UNION ALL
  SELECT 'type ' || t.typname || ' kind ' || t.typtype::text
         || coalesce(' labels ' || (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                                    FROM pg_enum e WHERE e.enumtypid = t.oid), '')
  FROM pg_type t, ns WHERE t.typnamespace = ns.oid AND t.typtype IN ('e', 'd', 'c', 'r')
    AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = t.typrelid AND c.relkind <> 'c')
) s ORDER BY 1";
