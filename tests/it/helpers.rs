//! Helpers shared by the integration tests: running the binary against a test database,
//! writing migration directories, and reading a database's state back.
#![allow(dead_code)]

use crate::support::{self, Out, TestDb};
use std::path::Path;
use std::process::Command;

/// The tests' own migration set (never the sample application's `migrations/`).
pub const BASIC_SET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/basic");

/// The basic fixture's versions, oldest first.
pub const BASIC: [&str; 5] = [
    "20240101000001",
    "20240101000002",
    "20240101000003",
    "20240101000004",
    "20240101000005",
];

/// The basic fixture's directory names, oldest first.
pub const BASIC_DIRS: [&str; 5] = [
    "2024-01-01-000001_create_set_updated_at",
    "2024-01-01-000002_create_users",
    "2024-01-01-000003_create_projects",
    "2024-01-01-000004_create_tasks",
    "2024-01-01-000005_add_users_last_login_at",
];

/// `migrate-tenants --database-url <db> <args>` (clean environment, empty cwd) with the
/// basic fixture (see `support::cli`).
pub fn cmd(db: &TestDb, args: &[&str]) -> Command {
    let mut cmd = support::cli();
    cmd.arg("--database-url").arg(&db.url).args(args);
    cmd
}

/// Runs `migrate-tenants --database-url <db> <args>` to completion.
pub fn mt(db: &TestDb, args: &[&str]) -> Out {
    support::run(&mut cmd(db, args))
}

/// Runs `migrate-tenants --database-url <db> --migrations-dir <dir> <args>`.
pub fn mt_dir(db: &TestDb, dir: &MigDir, args: &[&str]) -> Out {
    let mut cmd = cmd(db, args);
    cmd.arg("--migrations-dir").arg(dir.path());
    support::run(&mut cmd)
}

/// Runs the binary without a database URL.
pub fn mt_bare(args: &[&str]) -> Out {
    let mut cmd = support::cli();
    cmd.args(args);
    support::run(&mut cmd)
}

/// Asserts the exit code, showing the output on failure.
#[track_caller]
pub fn assert_code(out: &Out, code: i32) {
    assert_eq!(
        out.code, code,
        "unexpected exit code\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.stdout, out.stderr
    );
}

/// stdout and stderr together.
pub fn all_output(out: &Out) -> String {
    format!("{}\n{}", out.stdout, out.stderr)
}

/// Asserts `haystack` contains every needle.
#[track_caller]
pub fn assert_contains(haystack: &str, needles: &[&str]) {
    for needle in needles {
        assert!(haystack.contains(needle), "expected {needle:?} in:\n{haystack}");
    }
}

/// The single stdout line that starts with `prefix` (panics if none or several).
#[track_caller]
pub fn line<'a>(stdout: &'a str, prefix: &str) -> &'a str {
    let found: Vec<&str> = stdout.lines().filter(|l| l.starts_with(prefix)).collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one line starting with {prefix:?} in:\n{stdout}"
    );
    found[0]
}

/// Asserts a per-tenant "changed" line: `<start>, <N> ms)`, e.g. start =
/// `acme: none -> 20240101000005 (5 applied`.
#[track_caller]
pub fn assert_changed_line(stdout: &str, start: &str) {
    let l = line(stdout, &format!("{start}, "));
    let ms = l[start.len() + 2..]
        .strip_suffix(" ms)")
        .unwrap_or_else(|| panic!("line {l:?} does not end with \" ms)\""));
    assert!(
        ms.parse::<u64>().is_ok(),
        "line {l:?}: {ms:?} is not a number of milliseconds"
    );
}

/// Creates the schemas.
pub fn create_schemas(db: &TestDb, names: &[&str]) {
    let sql: String = names.iter().map(|n| format!("CREATE SCHEMA \"{n}\";\n")).collect();
    db.exec(&sql);
}

/// Splits psql -At output into rows.
pub fn rows(text: &str) -> Vec<String> {
    text.lines().filter(|l| !l.is_empty()).map(str::to_string).collect()
}

/// Whether `schema.table` exists (any relation kind).
pub fn relation_exists(db: &TestDb, schema: &str, name: &str) -> bool {
    db.query(&format!(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = '{schema}' AND c.relname = '{name}'"
    )) == "1"
}

/// Whether the schema exists.
pub fn schema_exists(db: &TestDb, schema: &str) -> bool {
    db.query(&format!("SELECT count(*) FROM pg_namespace WHERE nspname = '{schema}'")) == "1"
}

/// Whether the schema has a diesel history table.
pub fn has_history(db: &TestDb, schema: &str) -> bool {
    relation_exists(db, schema, "__diesel_schema_migrations")
}

/// The versions in `schema.__diesel_schema_migrations`, oldest first (empty when the table
/// does not exist).
pub fn history(db: &TestDb, schema: &str) -> Vec<String> {
    if !has_history(db, schema) {
        return Vec::new();
    }
    rows(&db.query(&format!(
        "SELECT version FROM \"{schema}\".__diesel_schema_migrations ORDER BY version"
    )))
}

/// `versions` as owned strings.
pub fn versions(versions: &[&str]) -> Vec<String> {
    versions.iter().map(|v| v.to_string()).collect()
}

/// Tables (relkind r/p) in `schema`, sorted.
pub fn tables_in(db: &TestDb, schema: &str) -> Vec<String> {
    rows(&db.query(&format!(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = '{schema}' AND c.relkind IN ('r', 'p') ORDER BY 1"
    )))
}

/// Non-system schemas, sorted (not the run journal's: the runner's own history, checked by
/// the journal tests).
pub fn user_schemas(db: &TestDb) -> Vec<String> {
    rows(&db.query(
        "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' \
         AND nspname NOT IN ('information_schema', 'migrate_tenants') ORDER BY 1",
    ))
}

/// Everything user-visible in the database: schemas, relations, types, functions (with
/// their schemas), and the rows of every history table. Equal snapshots mean "untouched"
/// (the run journal aside).
pub fn snapshot(db: &TestDb) -> Vec<String> {
    let objects = rows(&db.query(
        "WITH ns AS (SELECT oid, nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' \
                     AND nspname NOT IN ('information_schema', 'migrate_tenants')) \
         SELECT x FROM ( \
           SELECT 'schema ' || nspname AS x FROM ns \
           UNION ALL SELECT 'relation ' || ns.nspname || '.' || c.relname \
             FROM pg_class c JOIN ns ON ns.oid = c.relnamespace \
           UNION ALL SELECT 'type ' || ns.nspname || '.' || t.typname \
             FROM pg_type t JOIN ns ON ns.oid = t.typnamespace \
           UNION ALL SELECT 'function ' || ns.nspname || '.' || p.proname \
             FROM pg_proc p JOIN ns ON ns.oid = p.pronamespace \
         ) s ORDER BY x",
    ));
    let mut out = objects.clone();
    for schema in user_schemas(db) {
        for v in history(db, &schema) {
            out.push(format!("history {schema} {v}"));
        }
    }
    out
}

/// Asserts nothing was created in `public`: no relations, types or functions, and no
/// history table.
#[track_caller]
pub fn assert_public_empty(db: &TestDb) {
    let objects = db.query(
        "SELECT (SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace) || ',' || \
                (SELECT count(*) FROM pg_type WHERE typnamespace = 'public'::regnamespace) || ',' || \
                (SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace)",
    );
    assert_eq!(objects, "0,0,0", "public has objects (relations,types,functions)");
    assert!(!has_history(db, "public"));
}

/// A temporary migrations directory.
pub struct MigDir {
    tmp: tempfile::TempDir,
}

impl MigDir {
    pub fn new() -> MigDir {
        MigDir {
            tmp: tempfile::Builder::new()
                .prefix("mt-migrations-")
                .tempdir()
                .expect("temporary directory"),
        }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn path_str(&self) -> &str {
        self.tmp.path().to_str().expect("UTF-8 temp path")
    }

    /// Writes `<dir>/up.sql` and, when given, `<dir>/down.sql`.
    pub fn add(&self, dir: &str, up: &str, down: Option<&str>) -> &MigDir {
        self.file(&format!("{dir}/up.sql"), up);
        if let Some(down) = down {
            self.file(&format!("{dir}/down.sql"), down);
        }
        self
    }

    /// Writes any file (parent directories are created).
    pub fn file(&self, relative: &str, text: &str) -> &MigDir {
        let path = self.tmp.path().join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create directory");
        }
        std::fs::write(&path, text).expect("write file");
        self
    }
}

impl Default for MigDir {
    fn default() -> Self {
        MigDir::new()
    }
}
