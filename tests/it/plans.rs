//! Plans before changes: `--dry-run` changes nothing (catalog and history compared before and
//! after), `--sql` prints the SQL the real run sends, and psql running that SQL leaves the
//! database as the real run does.

use crate::helpers::*;
use crate::support::TestDb;

/// Everything a run could change, exactly: schemas, relations, columns with their types,
/// index definitions, types, functions, and history rows with their `run_on` timestamps.
fn catalog(db: &TestDb, with_times: bool) -> Vec<String> {
    let mut out = snapshot(db);
    out.extend(rows(&db.query(
        "SELECT n.nspname || '.' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod) \
         || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END \
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE a.attnum > 0 AND NOT a.attisdropped AND n.nspname NOT LIKE 'pg\\_%' \
         AND n.nspname <> 'information_schema' ORDER BY 1",
    )));
    out.extend(rows(&db.query(
        "SELECT schemaname || ' ' || indexdef FROM pg_indexes WHERE schemaname NOT LIKE 'pg\\_%' \
         AND schemaname <> 'information_schema' ORDER BY 1",
    )));
    if with_times {
        for schema in user_schemas(db) {
            if has_history(db, &schema) {
                out.extend(rows(&db.query(&format!(
                    "SELECT '{schema} ' || version || ' ' || run_on FROM \"{schema}\".__diesel_schema_migrations ORDER BY 1"
                ))));
            }
        }
    }
    out
}

/// A set with a transactional migration, a `CREATE INDEX CONCURRENTLY` outside a
/// transaction, and another transactional one.
fn mixed_set() -> MigDir {
    let dir = MigDir::new();
    dir.add(
        "2024-02-01-000001_create_notes",
        "CREATE TABLE notes (id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL);",
        Some("DROP TABLE notes;"),
    )
    .add(
        "2024-02-01-000002_index_notes_body",
        "CREATE INDEX CONCURRENTLY notes_body_idx ON notes (body)",
        Some("DROP INDEX CONCURRENTLY notes_body_idx"),
    )
    .file(
        "2024-02-01-000002_index_notes_body/metadata.toml",
        "run_in_transaction = false\n",
    )
    .add(
        "2024-02-01-000003_add_notes_pinned",
        "ALTER TABLE notes ADD COLUMN pinned BOOLEAN NOT NULL DEFAULT false;",
        None,
    );
    dir
}

/// acme at the first migration, globex with an empty schema, initech missing.
fn mixed_fleet(db: &TestDb, dir: &MigDir) {
    create_schemas(db, &["acme", "globex"]);
    assert_code(
        &mt_dir(db, dir, &["--tenants", "acme", "up", "--to", "20240201000001"]),
        0,
    );
}

const FLEET: [&str; 4] = ["--tenants", "acme,globex,initech", "--missing", "create"];

#[test]
fn dry_run_sql_changes_nothing_and_replays_like_the_real_run() {
    let dir = mixed_set();
    let planned = TestDb::new();
    mixed_fleet(&planned, &dir);
    let before = catalog(&planned, true);
    let out = mt_dir(&planned, &dir, &[&FLEET[..], &["up", "--dry-run", "--sql"]].concat());
    assert_code(&out, 0);
    assert_eq!(catalog(&planned, true), before, "a dry run changed the database");
    assert_contains(
        &out.stdout,
        &[
            "-- tenant acme",
            "set_config('search_path', '\"acme\", \"public\"', true)",
            "INSERT INTO \"initech\".__diesel_schema_migrations (version) VALUES ('20240201000003')",
            "CREATE SCHEMA IF NOT EXISTS \"initech\"",
        ],
    );
    assert_contains(
        &out.stderr,
        &[
            "acme: would apply 2 (2024-02-01-000001_create_notes -> 2024-02-01-000003_add_notes_pinned",
            "apply  2024-02-01-000002_index_notes_body  [outside a transaction",
            "irreversible: no down.sql",
            "up (dry run, nothing was changed): 3 tenant(s): 3 would change",
        ],
    );

    planned.exec(&out.stdout);
    let real = TestDb::new();
    mixed_fleet(&real, &dir);
    assert_code(&mt_dir(&real, &dir, &[&FLEET[..], &["up"]].concat()), 0);
    assert_eq!(catalog(&planned, false), catalog(&real, false));
    assert_eq!(history(&planned, "initech"), history(&real, "initech"));
}

#[test]
fn dry_run_of_down_and_redo_replays_like_the_real_run() {
    for command in [&["down", "--steps", "2"][..], &["redo", "--steps", "2"]] {
        let planned = TestDb::new();
        let real = TestDb::new();
        for db in [&planned, &real] {
            create_schemas(db, &["acme", "globex"]);
            assert_code(&mt(db, &["--tenants", "acme,globex", "up"]), 0);
        }
        let args = [&["--tenants", "acme,globex"][..], command, &["--sql"]].concat();
        let before = catalog(&planned, true);
        let out = mt(&planned, &args);
        assert_code(&out, 0);
        assert_eq!(
            catalog(&planned, true),
            before,
            "{command:?} --sql changed the database"
        );
        assert_contains(&out.stderr, &["revert 2024-01-01-000005_add_users_last_login_at"]);
        planned.exec(&out.stdout);
        let yes = [&["--tenants", "acme,globex"][..], command, &["--yes"]].concat();
        assert_code(&mt(&real, &yes), 0);
        assert_eq!(catalog(&planned, false), catalog(&real, false), "{command:?}");
    }
}

#[test]
fn dry_run_reports_in_json_and_lifecycle_dry_runs_change_nothing() {
    let db = TestDb::new();
    create_schemas(&db, &["acme", "old"]);
    assert_code(&mt(&db, &["--tenants", "old", "up"]), 0);
    let before = catalog(&db, true);
    let out = mt(&db, &["--format", "json", "--tenants", "acme", "up", "--dry-run"]);
    assert_code(&out, 0);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("one JSON document");
    assert_eq!(doc["dry_run"], true);
    let steps = doc["tenants"][0]["plan"]["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 5);
    assert_eq!(steps[1]["migration"], BASIC_DIRS[1]);
    assert_eq!(steps[1]["action"], "apply");
    assert_eq!(doc["tenants"][0]["applied"].as_array().map(Vec::len), Some(0));

    let create = mt(&db, &["tenant", "create", "fresh", "--dry-run", "--sql"]);
    assert_code(&create, 0);
    assert_contains(&create.stdout, &["CREATE SCHEMA IF NOT EXISTS \"fresh\"", "BEGIN;"]);
    let drop = mt(&db, &["tenant", "drop", "old", "--dry-run"]);
    assert_code(&drop, 0);
    assert_contains(
        &drop.stdout,
        &["old: would drop the schema and all its data (at 2024-01-01-000005_add_users_last_login_at)"],
    );
    assert_eq!(catalog(&db, true), before, "a lifecycle dry run changed the database");
}
