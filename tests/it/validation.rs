//! Migration-set validation: every problem is exit code 2, names the directory, and the
//! database is untouched. Plus the directory-listing rules and down.sql kinds.

use crate::helpers::*;
use crate::support::TestDb;

/// A valid first migration, so "untouched" means something: it would be applied if the set
/// were accepted.
fn with_valid_first() -> MigDir {
    let dir = MigDir::new();
    dir.add(
        "2024-01-01-000001_valid",
        "CREATE TABLE valid (id int);",
        Some("DROP TABLE valid;"),
    );
    dir
}

/// Runs `up` with an existing tenant and a missing one (with --create-missing) and checks
/// that validation refused it: exit 2, the message names `needle`, nothing changed.
#[track_caller]
fn assert_refused(dir: &MigDir, needles: &[&str]) {
    let db = TestDb::new();
    create_schemas(&db, &["acme"]);
    let before = snapshot(&db);
    let out = mt_dir(&db, dir, &["--tenants", "acme,newco", "--create-missing", "up"]);
    assert_code(&out, 2);
    assert_contains(&out.stderr, &["invalid migration set"]);
    assert_contains(&out.stderr, needles);
    assert!(out.stdout.is_empty(), "stdout: {}", out.stdout);
    assert_eq!(snapshot(&db), before, "the database changed");
    assert!(!schema_exists(&db, "newco"));

    // status and list refuse it too.
    let out = mt_dir(&db, dir, &["--tenants", "acme", "status"]);
    assert_code(&out, 2);
    assert_contains(&out.stderr, needles);
    let out = mt_bare(&["list", "--migrations-dir", dir.path_str()]);
    assert_code(&out, 2);
    assert_contains(&out.stderr, needles);
}

#[test]
fn top_level_commit_is_refused() {
    let dir = with_valid_first();
    dir.add(
        "2024-01-01-000002_commits",
        "CREATE TABLE a (id int);\nCOMMIT;\nCREATE TABLE b (id int);\n",
        Some("DROP TABLE b; DROP TABLE a;"),
    );
    assert_refused(&dir, &["2024-01-01-000002_commits/up.sql", "COMMIT"]);
}

#[test]
fn other_transaction_control_is_refused() {
    for statement in ["BEGIN;", "START TRANSACTION;", "END;", "ROLLBACK;", "ABORT;"] {
        let dir = with_valid_first();
        dir.add(
            "2024-01-01-000002_tx",
            &format!("{statement}\nCREATE TABLE a (id int);\n"),
            Some("DROP TABLE a;"),
        );
        assert_refused(&dir, &["2024-01-01-000002_tx/up.sql"]);
    }
    // down.sql is checked as well.
    let dir = with_valid_first();
    dir.add(
        "2024-01-01-000002_tx_down",
        "CREATE TABLE a (id int);",
        Some("DROP TABLE a;\nCOMMIT;"),
    );
    assert_refused(&dir, &["2024-01-01-000002_tx_down/down.sql"]);
}

#[test]
fn keywords_inside_bodies_strings_and_comments_are_not_refused() {
    let db = TestDb::new();
    create_schemas(&db, &["acme"]);
    let dir = MigDir::new();
    dir.add(
        "2024-01-01-000001_tricky",
        "-- COMMIT; SET search_path TO public;\n\
         /* BEGIN; */\n\
         CREATE TABLE notes (body text DEFAULT 'COMMIT; SET search_path TO public');\n\
         CREATE FUNCTION note_count() RETURNS bigint LANGUAGE plpgsql AS $fn$\n\
         BEGIN\n  RETURN (SELECT count(*) FROM notes);\nEND;\n$fn$;\n\
         SAVEPOINT sp;\nINSERT INTO notes VALUES ('x');\nROLLBACK TO SAVEPOINT sp;\n\
         INSERT INTO notes VALUES (E'it\\'s; COMMIT;');\n",
        Some("DROP FUNCTION note_count();\nDROP TABLE notes;"),
    );
    let out = mt_dir(&db, &dir, &["--tenants", "acme", "up"]);
    assert_code(&out, 0);
    assert_eq!(db.query("SET search_path TO acme; SELECT note_count()"), "1");
    assert_eq!(db.query("SELECT body FROM acme.notes"), "it's; COMMIT;");
    assert_public_empty(&db);
}

#[test]
fn commit_after_a_column_named_begin_is_refused() {
    // `begin` is a non-reserved keyword: a valid column name. The top-level COMMIT after it
    // must still be refused; otherwise it commits half the migration at run time while the
    // report says "rolled back".
    let dir = with_valid_first();
    dir.add(
        "2024-01-01-000002_period",
        "CREATE TABLE period (id int, begin date);\nCOMMIT;\nCREATE TABLE later (id int);\n",
        Some("DROP TABLE later; DROP TABLE period;"),
    );
    assert_refused(&dir, &["2024-01-01-000002_period/up.sql", "COMMIT"]);
}

#[test]
fn duplicate_versions_are_refused() {
    let dir = MigDir::new();
    dir.add("2024-01-01-000001_a", "CREATE TABLE a (id int);", Some("DROP TABLE a;"))
        .add("20240101000001_b", "CREATE TABLE b (id int);", Some("DROP TABLE b;"));
    assert_refused(&dir, &["2024-01-01-000001_a", "20240101000001_b", "duplicate version"]);
}

#[test]
fn empty_up_sql_is_refused() {
    let dir = with_valid_first();
    dir.add("2024-01-01-000002_empty", "", Some("SELECT 1;"));
    assert_refused(&dir, &["2024-01-01-000002_empty/up.sql"]);
}

#[test]
fn comment_only_up_sql_is_refused() {
    let dir = with_valid_first();
    dir.add(
        "2024-01-01-000002_comments",
        "-- Your SQL goes here\n/* later */\n;\n",
        Some("SELECT 1;"),
    );
    assert_refused(&dir, &["2024-01-01-000002_comments/up.sql"]);
}

#[test]
fn missing_up_sql_is_refused() {
    let dir = with_valid_first();
    dir.file("2024-01-01-000002_no_up/down.sql", "SELECT 1;");
    assert_refused(&dir, &["2024-01-01-000002_no_up", "up.sql"]);
}

#[test]
fn invalid_metadata_is_refused() {
    let dir = with_valid_first();
    dir.add(
        "2024-01-01-000002_bad_meta",
        "CREATE TABLE a (id int);",
        Some("DROP TABLE a;"),
    )
    .file(
        "2024-01-01-000002_bad_meta/metadata.toml",
        "run_in_transaction = \"yes\"\n",
    );
    assert_refused(&dir, &["2024-01-01-000002_bad_meta/metadata.toml"]);
}

#[test]
fn empty_metadata_is_refused() {
    let dir = with_valid_first();
    dir.add(
        "2024-01-01-000002_empty_meta",
        "CREATE TABLE a (id int);",
        Some("DROP TABLE a;"),
    )
    .file("2024-01-01-000002_empty_meta/metadata.toml", "\n");
    assert_refused(&dir, &["2024-01-01-000002_empty_meta/metadata.toml"]);
}

#[test]
fn overlong_version_is_refused() {
    let version = "1".repeat(51);
    let dir = with_valid_first();
    dir.add(
        &format!("{version}_long"),
        "CREATE TABLE a (id int);",
        Some("DROP TABLE a;"),
    );
    assert_refused(&dir, &[&format!("{version}_long"), "50"]);

    // Exactly 50 characters is fine.
    let db = TestDb::new();
    create_schemas(&db, &["acme"]);
    let version = "2".repeat(50);
    let dir = MigDir::new();
    dir.add(
        &format!("{version}_max"),
        "CREATE TABLE a (id int);",
        Some("DROP TABLE a;"),
    );
    let out = mt_dir(&db, &dir, &["--tenants", "acme", "up"]);
    assert_code(&out, 0);
    assert_eq!(history(&db, "acme"), [version]);
}

#[test]
fn every_name_diesel_accepts_runs_in_diesels_order_and_a_name_without_version_is_refused() {
    let db = TestDb::new();
    create_schemas(&db, &["acme"]);
    let dir = with_valid_first();
    // A real project's name: no `_`, so diesel's version is the whole name without dashes.
    dir.add(
        "2024-01-01-0002-add-things",
        "CREATE TABLE things (id int);",
        Some("DROP TABLE things;"),
    );
    let out = mt_dir(&db, &dir, &["--tenants", "acme", "up"]);
    assert_code(&out, 0);
    assert_eq!(
        history(&db, "acme").last().map(String::as_str),
        Some("202401010002addthings")
    );
    assert!(relation_exists(&db, "acme", "things"));
    let down = mt_dir(&db, &dir, &["--tenants", "acme", "down"]);
    assert_code(&down, 0);
    assert!(!relation_exists(&db, "acme", "things"));

    let bad = with_valid_first();
    bad.add("_things", "CREATE TABLE a (id int);", Some("DROP TABLE a;"));
    assert_refused(&bad, &["_things: no version"]);
}

#[test]
fn every_problem_is_reported_at_once() {
    let dir = with_valid_first();
    dir.add("2024-01-01-000002_empty", "", None)
        .add("2024-01-01-000003_commit", "COMMIT;", None);
    assert_refused(
        &dir,
        &["2024-01-01-000002_empty/up.sql", "2024-01-01-000003_commit/up.sql"],
    );
}

#[test]
fn empty_or_missing_directory_is_refused() {
    let db = TestDb::new();
    create_schemas(&db, &["acme"]);
    let dir = MigDir::new();
    let out = mt_dir(&db, &dir, &["--tenants", "acme", "up"]);
    assert_code(&out, 2);
    assert_contains(&out.stderr, &["no migrations found"]);
    let missing = dir.path().join("does-not-exist");
    let out = mt(
        &db,
        &["--tenants", "acme", "--migrations-dir", missing.to_str().unwrap(), "up"],
    );
    assert_code(&out, 2);
    assert_contains(&out.stderr, &["does-not-exist"]);
    assert!(!has_history(&db, "acme"));
}

#[test]
fn plain_files_and_dot_entries_are_ignored() {
    let db = TestDb::new();
    create_schemas(&db, &["acme"]);
    let dir = with_valid_first();
    dir.file("README.md", "# migrations\n")
        .file(".keep", "")
        .file("stray.sql", "COMMIT; DROP SCHEMA public CASCADE;")
        .file("2024-01-01-000009_not_a_dir.sql", "COMMIT;")
        .file(".hidden_2024-01-01-000002_x/up.sql", "COMMIT;");

    let out = mt_bare(&["list", "--migrations-dir", dir.path_str()]);
    assert_code(&out, 0);
    assert_contains(&out.stdout, &["1 migration(s) from"]);

    let out = mt_dir(&db, &dir, &["--tenants", "acme", "up"]);
    assert_code(&out, 0);
    assert_eq!(history(&db, "acme"), ["20240101000001"]);
    assert!(relation_exists(&db, "acme", "valid"));
    assert!(schema_exists(&db, "public"));
}

#[test]
fn comment_only_down_sql_reverts_as_a_no_op() {
    let db = TestDb::new();
    create_schemas(&db, &["acme", "globex"]);
    let dir = MigDir::new();
    dir.add(
        "2024-01-01-000001_keep",
        "CREATE TABLE kept (id int);",
        Some("-- nothing to undo: kept stays\n/* really */\n"),
    );
    assert_code(&mt_dir(&db, &dir, &["--tenants", "acme,globex", "up"]), 0);

    let out = mt_dir(&db, &dir, &["--tenants", "acme,globex", "down", "--yes"]);
    assert_code(&out, 0);
    for t in ["acme", "globex"] {
        assert_changed_line(&out.stdout, &format!("{t}: 2024-01-01-000001_keep -> none (1 reverted"));
        assert!(history(&db, t).is_empty());
        assert!(relation_exists(&db, t, "kept"), "{t}.kept was dropped");
    }
    let notes: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.contains("2024-01-01-000001_keep: down.sql is empty; only its history row was removed"))
        .collect();
    assert_eq!(notes.len(), 2, "one note per tenant:\n{}", out.stdout);
}

#[test]
fn missing_down_sql_refuses_down_before_touching_any_tenant() {
    let db = TestDb::new();
    create_schemas(&db, &["acme", "globex", "initech"]);
    let dir = MigDir::new();
    dir.add(
        "2024-01-01-000001_first",
        "CREATE TABLE first (id int);",
        Some("DROP TABLE first;"),
    )
    .add("2024-01-01-000002_one_way", "CREATE TABLE one_way (id int);", None);
    assert_code(&mt_dir(&db, &dir, &["--tenants", "acme,globex", "up"]), 0);
    // initech only has the reversible migration: on its own its `down` would work.
    assert_code(
        &mt_dir(&db, &dir, &["--tenants", "initech", "up", "--to", "20240101000001"]),
        0,
    );
    let before = snapshot(&db);

    for args in [
        vec!["down"],
        vec!["down", "--all"],
        vec!["down", "--to", "20240101000001"],
        vec!["redo"],
    ] {
        let mut full = vec!["--tenants", "acme,globex,initech", "--concurrency", "1"];
        full.extend(&args);
        full.push("--yes");
        let out = mt_dir(&db, &dir, &full);
        assert_code(&out, 2);
        assert_contains(
            &out.stderr,
            &["2024-01-01-000002_one_way", "no down.sql", "acme", "globex"],
        );
        assert_eq!(snapshot(&db), before, "{args:?} changed the database");
    }
    assert_eq!(history(&db, "acme"), ["20240101000001", "20240101000002"]);
    assert_eq!(history(&db, "initech"), ["20240101000001"]);

    // The tenant that does not need the irreversible migration can still go down alone.
    let out = mt_dir(&db, &dir, &["--tenants", "initech", "down"]);
    assert_code(&out, 0);
    assert!(history(&db, "initech").is_empty());
}

#[test]
fn case_and_end_as_names_in_a_begin_atomic_body_do_not_hide_a_commit() {
    let db = TestDb::new();
    create_schemas(&db, &["acme"]);
    let dir = MigDir::new();
    dir.add(
        "2024-01-01-000001_hidden_commit",
        "CREATE TABLE half_done (id int);\n\
         CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1 AS case; END;\n\
         COMMIT;\nSELECT 1;",
        None,
    );
    let before = snapshot(&db);
    let out = mt_dir(&db, &dir, &["--tenants", "acme", "up"]);
    assert_code(&out, 2);
    assert_contains(
        &out.stderr,
        &["2024-01-01-000001_hidden_commit/up.sql line 3: `COMMIT`"],
    );
    assert_eq!(snapshot(&db), before);

    let ok = MigDir::new();
    ok.add(
        "2024-01-01-000001_end_column",
        "CREATE TABLE period (id int, \"end\" date);\n\
         CREATE FUNCTION last_end() RETURNS date LANGUAGE sql BEGIN ATOMIC SELECT max(p.end) AS end FROM period p; END;",
        Some("DROP FUNCTION last_end(); DROP TABLE period;"),
    );
    assert_code(&mt_dir(&db, &ok, &["--tenants", "acme", "up"]), 0);
}
