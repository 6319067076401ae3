/*!
Reading and validating diesel migration sets, shared by the `migrate-tenants` library (at run
time) and its `embed_migrations!` macro (at compile time), so that a set the runner would
refuse fails the application's build instead.

diesel accepts almost anything (duplicate versions collapse, an invalid `metadata.toml`
silently means "in a transaction", a top-level `COMMIT` breaks atomicity at run time).
Here every problem is found up front and reported together, naming the directory, so a
broken set never touches a tenant. Names follow diesel: the version is the directory name up
to its first `_`, dashes removed, and migrations run in version order.

This crate does no database work and has no stable API of its own: use it through
`migrate-tenants`.
*/

pub mod sql_lexer;

use sql_lexer::{for_each_statement, Statement};
use std::fmt;
use std::path::{Path, PathBuf};

/// The longest version diesel can record (`version VARCHAR(50)`).
pub const MAX_VERSION_LEN: usize = 50;

/// What reverting a migration does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownSql {
    /// No `down.sql`: the migration is irreversible and `down` refuses it.
    Missing,
    /// An empty or comment-only `down.sql`: reverting only removes the history row.
    NoOp,
    /// SQL to run.
    Sql(String),
}

/// One validated migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// Directory name, e.g. `2024-01-01-000001_create_users`.
    pub dir_name: String,
    /// diesel's version: the directory name up to the first `_`, without `-`.
    pub version: String,
    /// The forward SQL.
    pub up: String,
    /// The reverse SQL.
    pub down: DownSql,
    /// `false` when `metadata.toml` says `run_in_transaction = false`.
    pub run_in_transaction: bool,
}

impl Migration {
    /// The part of the directory name after the version (empty when the name has no `_`).
    pub fn name(&self) -> &str {
        self.dir_name.split_once('_').map_or("", |(_, name)| name)
    }
}

/// Where a set was loaded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Compiled into an application by `embed_migrations!`.
    Embedded {
        /// The crate that embedded it (`CARGO_PKG_NAME` of the application).
        package: String,
        /// That crate's version.
        version: String,
        /// The directory, as given to the macro (relative to the crate's manifest).
        dir: String,
    },
    /// Read at run time from a directory.
    Directory(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Embedded { package, version, dir } => {
                write!(f, "{dir}/ embedded in {package} {version}")
            }
            Origin::Directory(dir) => write!(f, "{}", dir.display()),
        }
    }
}

/// A validated set of migrations, sorted by version.
#[derive(Debug, Clone)]
pub struct MigrationSet {
    origin: Origin,
    migrations: Vec<Migration>,
}

/// The files of one migration directory, as read (before validation).
#[derive(Debug, Clone, Default)]
pub struct RawMigration {
    /// Directory name.
    pub dir_name: String,
    /// `up.sql`, if present.
    pub up: Option<String>,
    /// `down.sql`, if present.
    pub down: Option<String>,
    /// `metadata.toml`, if present.
    pub metadata: Option<String>,
}

/// A migration set that cannot be used; lists every problem found.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid migration set in {origin}:{}", problems.iter().map(|p| format!("\n  - {p}")).collect::<String>())]
pub struct SetError {
    /// Where the set came from.
    pub origin: Origin,
    /// One line per problem, each naming the migration directory.
    pub problems: Vec<String>,
}

impl MigrationSet {
    /// Reads and validates a migrations directory. Plain files and dot-entries in it
    /// (`README.md`, `.keep`, stray `.sql` files) are ignored, as diesel ignores them.
    pub fn from_dir(dir: &Path) -> Result<MigrationSet, SetError> {
        let origin = Origin::Directory(dir.to_path_buf());
        let raw = read_dir(dir).map_err(|problem| SetError {
            origin: origin.clone(),
            problems: vec![problem],
        })?;
        MigrationSet::validate(origin, raw)
    }

    /// A set taken as it is, without any check: only for tests of the runner's run-time
    /// safety checks (what validation would have refused must still be caught when it runs).
    #[doc(hidden)]
    pub fn __unchecked(origin: Origin, migrations: Vec<Migration>) -> MigrationSet {
        MigrationSet { origin, migrations }
    }

    /// Validates raw migration files into a set; every problem is collected (used by the
    /// macro; applications use `from_dir` or `embed_migrations!`).
    #[doc(hidden)]
    pub fn validate(origin: Origin, raw: Vec<RawMigration>) -> Result<MigrationSet, SetError> {
        let mut problems = Vec::new();
        let mut migrations: Vec<Migration> = raw
            .into_iter()
            .filter_map(|r| check_migration(r, &mut problems))
            .collect();
        migrations.sort_by(|a, b| a.version.cmp(&b.version).then(a.dir_name.cmp(&b.dir_name)));
        for pair in migrations.windows(2) {
            if pair[0].version == pair[1].version {
                problems.push(format!(
                    "{} and {}: duplicate version {} (diesel would silently keep only one)",
                    pair[0].dir_name, pair[1].dir_name, pair[0].version
                ));
            }
        }
        if migrations.is_empty() && problems.is_empty() {
            problems.push("no migrations found (a migration is a directory <version>_<name> holding up.sql)".into());
        }
        if problems.is_empty() {
            Ok(MigrationSet { origin, migrations })
        } else {
            Err(SetError { origin, problems })
        }
    }

    /// Where the set came from.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// All migrations, in version order.
    pub fn migrations(&self) -> &[Migration] {
        &self.migrations
    }

    /// The newest migration.
    pub fn newest(&self) -> Option<&Migration> {
        self.migrations.last()
    }

    /// The migration with this version.
    pub fn get(&self, version: &str) -> Option<&Migration> {
        self.migrations.iter().find(|m| m.version == version)
    }

    /// Normalises a version given by a user (`2024-01-01-000001` or `20240101000001`,
    /// or a whole directory name) and checks the set knows it.
    pub fn resolve_version(&self, given: &str) -> Option<&Migration> {
        self.get(&version_of(given.trim()))
    }
}

/// The migration directories under `dir` with their files, unvalidated: subdirectories only,
/// skipping dot-entries as diesel does. The error says what could not be read.
pub fn read_dir(dir: &Path) -> Result<Vec<RawMigration>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read the directory: {e}"))?;
    let mut raw = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot list the directory: {e}"))?;
        let dir_name = entry.file_name().to_string_lossy().into_owned();
        if dir_name.starts_with('.') || !entry.path().is_dir() {
            continue;
        }
        let read = |file: &str| read_optional(&entry.path().join(file)).map_err(|e| format!("{dir_name}/{file}: {e}"));
        raw.push(RawMigration {
            up: read("up.sql")?,
            down: read("down.sql")?,
            metadata: read("metadata.toml")?,
            dir_name,
        });
    }
    raw.sort_by(|a, b| a.dir_name.cmp(&b.dir_name));
    Ok(raw)
}

/// diesel's rule: the directory name up to the first `_`, with `-` removed.
pub fn version_of(dir_name: &str) -> String {
    dir_name.split('_').next().unwrap_or("").replace('-', "")
}

fn read_optional(path: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not valid UTF-8")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn check_migration(raw: RawMigration, problems: &mut Vec<String>) -> Option<Migration> {
    let dir = raw.dir_name.as_str();
    let before = problems.len();
    let version = version_of(dir);
    if version.is_empty() {
        problems.push(format!(
            "{dir}: no version: diesel takes the name up to its first `_`, without dashes, as the version \
             (name it <version>_<name>, e.g. 2024-01-01-000001_create_users)"
        ));
    } else if version.len() > MAX_VERSION_LEN {
        problems.push(format!(
            "{dir}: version {version} is {} characters; diesel's history table records at most {MAX_VERSION_LEN}",
            version.len()
        ));
    }
    let run_in_transaction = check_metadata(dir, raw.metadata.as_deref(), problems);
    let up = match raw.up {
        None => {
            problems.push(format!("{dir}: up.sql is missing"));
            String::new()
        }
        Some(up) => {
            match check_sql(dir, "up.sql", &up, problems) {
                Some(0) => problems.push(format!("{dir}/up.sql: empty or comments only (write the migration's SQL)")),
                Some(n) if n > 1 && run_in_transaction == Some(false) => problems.push(format!(
                    "{dir}/up.sql: {n} statements, but run_in_transaction = false allows exactly one \
                     (PostgreSQL runs a multi-statement file as one implicit transaction); split it into one migration per statement"
                )),
                _ => {}
            }
            up
        }
    };
    let down = match raw.down {
        None => DownSql::Missing,
        Some(down) => match check_sql(dir, "down.sql", &down, problems) {
            Some(0) => DownSql::NoOp,
            Some(n) if n > 1 && run_in_transaction == Some(false) => {
                problems.push(format!(
                    "{dir}/down.sql: {n} statements, but run_in_transaction = false allows exactly one"
                ));
                DownSql::Sql(down)
            }
            _ => DownSql::Sql(down),
        },
    };
    (problems.len() == before).then(|| Migration {
        dir_name: raw.dir_name.clone(),
        version,
        up,
        down,
        run_in_transaction: run_in_transaction.unwrap_or(true),
    })
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    run_in_transaction: bool,
}

/// `Some(run_in_transaction)`, or `None` after recording a problem.
fn check_metadata(dir: &str, metadata: Option<&str>, problems: &mut Vec<String>) -> Option<bool> {
    let Some(text) = metadata else {
        return Some(true);
    };
    if text.trim().is_empty() {
        problems.push(format!(
            "{dir}/metadata.toml: empty (diesel reads an empty file as run_in_transaction = false); write `run_in_transaction = false` or delete the file"
        ));
        return None;
    }
    match toml::from_str::<Metadata>(text) {
        Ok(m) => Some(m.run_in_transaction),
        Err(e) => {
            let msg = e.message().to_string();
            problems.push(format!(
                "{dir}/metadata.toml: invalid ({msg}); the only key is `run_in_transaction = true|false`"
            ));
            None
        }
    }
}

/// Checks one SQL file; returns its statement count, or `None` if it cannot be split.
/// One pass over the file: statements are checked as the lexer finds them, never collected.
fn check_sql(dir: &str, file: &str, sql: &str, problems: &mut Vec<String>) -> Option<usize> {
    let mut count = 0;
    let mut found = Vec::new();
    let split = for_each_statement(sql, |stmt| {
        count += 1;
        if let Some(why) = forbidden(&stmt) {
            found.push(format!(
                "{dir}/{file} line {}: `{}` {why}",
                stmt.line,
                first_line(stmt.text)
            ));
        }
    });
    match split {
        Ok(()) => {
            problems.append(&mut found);
            Some(count)
        }
        // A file that cannot be split reports only that (its statements are not checked).
        Err(e) => {
            problems.push(format!("{dir}/{file}: {e}"));
            None
        }
    }
}

/// Why a top-level statement may not appear in a migration, if it may not.
pub fn forbidden(stmt: &Statement<'_>) -> Option<&'static str> {
    const TX: &str = "controls the transaction: the runner wraps each migration in its own transaction \
                      (use metadata.toml `run_in_transaction = false` for statements that cannot run in one)";
    const PATH: &str = "changes search_path: the runner sets it to the tenant's schema; \
                        a migration that changes it would write into another schema";
    let tx_control: &[&[&str]] = &[
        &["begin"],
        &["start", "transaction"],
        &["commit"],
        &["end"],
        &["abort"],
        &["prepare", "transaction"],
        &["commit", "prepared"],
        &["rollback", "prepared"],
    ];
    if tx_control.iter().any(|p| stmt.starts_with(p))
        || (stmt.starts_with(&["rollback"]) && !stmt.words.iter().any(|w| w == "to"))
    {
        return Some(TX);
    }
    let path_control: &[&[&str]] = &[
        &["set", "search_path"],
        &["set", "session", "search_path"],
        &["set", "local", "search_path"],
        &["set", "schema"],
        &["set", "session", "schema"],
        &["set", "local", "schema"],
        &["reset", "search_path"],
        &["reset", "all"],
    ];
    if stmt.starts_with(&["discard", "all"]) {
        return Some("would drop the runner's advisory lock and diesel's prepared statements");
    }
    path_control.iter().any(|p| stmt.starts_with(p)).then_some(PATH)
}

fn first_line(text: &str) -> &str {
    let line = text.lines().next().unwrap_or("");
    if line.len() > 60 {
        let mut end = 60;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        &line[..end]
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(dir: &str, up: &str, down: Option<&str>, metadata: Option<&str>) -> RawMigration {
        RawMigration {
            dir_name: dir.into(),
            up: Some(up.into()),
            down: down.map(Into::into),
            metadata: metadata.map(Into::into),
        }
    }

    fn origin() -> Origin {
        Origin::Directory(PathBuf::from("test"))
    }

    fn problems(raws: Vec<RawMigration>) -> Vec<String> {
        MigrationSet::validate(origin(), raws).unwrap_err().problems
    }

    #[test]
    fn versions_follow_diesel() {
        assert_eq!(version_of("2024-01-01-000001_x"), "20240101000001");
        assert_eq!(version_of("2026-11-24-182640-0000_x_y"), "202611241826400000");
    }

    #[test]
    fn every_name_diesel_accepts_is_accepted_in_diesel_order() {
        let set = MigrationSet::validate(
            origin(),
            vec![
                raw(
                    "2023-05-23-1715-update-subgraph-deployment-assignment",
                    "SELECT 1;",
                    None,
                    None,
                ),
                raw("2023-05-23-171500_b", "SELECT 1;", None, None),
                raw("00000000000000_diesel_initial_setup", "SELECT 1;", None, None),
                raw("2026-11-24-182640-0000_x", "SELECT 1;", None, None),
            ],
        )
        .unwrap();
        let versions: Vec<&str> = set.migrations().iter().map(|m| m.version.as_str()).collect();
        assert_eq!(
            versions,
            [
                "00000000000000",
                "20230523171500",
                "202305231715updatesubgraphdeploymentassignment",
                "202611241826400000"
            ]
        );
        assert_eq!(set.migrations()[2].name(), "");
        let p = problems(vec![
            raw("_x", "SELECT 1;", None, None),
            raw("--_y", "SELECT 1;", None, None),
        ]);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("no version"), "{p:?}");
    }

    #[test]
    fn down_kinds() {
        let set = MigrationSet::validate(
            origin(),
            vec![
                raw("1_a", "SELECT 1;", None, None),
                raw("2_b", "SELECT 1;", Some("-- nothing"), None),
                raw("3_c", "SELECT 1;", Some("SELECT 2;"), None),
            ],
        )
        .unwrap();
        let downs: Vec<_> = set.migrations().iter().map(|m| m.down.clone()).collect();
        assert_eq!(
            downs,
            vec![DownSql::Missing, DownSql::NoOp, DownSql::Sql("SELECT 2;".into())]
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let p = problems(vec![
            raw("2024-01-01-000001_a", "SELECT 1;", None, None),
            raw("20240101000001_b", "SELECT 1;", None, None),
            raw("3_empty", "-- Your SQL goes here", None, None),
            raw("4_meta", "SELECT 1;", None, Some("")),
            raw("5_meta", "SELECT 1;", None, Some("run_in_transaction = 'no'")),
            raw(&format!("{}_long", "1".repeat(51)), "SELECT 1;", None, None),
            raw("7_commit", "CREATE TABLE t (); COMMIT;", None, None),
            raw("8_path", "SET search_path TO other;", None, None),
            raw(
                "9_multi",
                "CREATE INDEX CONCURRENTLY a ON t (x); CREATE INDEX CONCURRENTLY b ON t (y);",
                None,
                Some("run_in_transaction = false"),
            ),
            raw("_name", "SELECT 1;", None, None),
        ]);
        let all = p.join("\n");
        for needle in [
            "duplicate version 20240101000001",
            "3_empty/up.sql: empty",
            "4_meta/metadata.toml: empty",
            "5_meta/metadata.toml: invalid",
            "characters; diesel's history table records at most 50",
            "7_commit/up.sql line 1: `COMMIT`",
            "8_path/up.sql line 1",
            "9_multi/up.sql: 2 statements",
            "_name: no version",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn function_attributes_and_do_blocks_pass() {
        let up = "CREATE FUNCTION f() RETURNS void LANGUAGE sql SET search_path FROM CURRENT AS $$ SELECT 1 $$;\nDO $$ BEGIN PERFORM 1; END $$;\nSAVEPOINT a; ROLLBACK TO SAVEPOINT a;";
        assert!(MigrationSet::validate(origin(), vec![raw("1_f", up, None, None)]).is_ok());
    }
}
