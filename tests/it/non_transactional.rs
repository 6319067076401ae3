//! Migrations with `run_in_transaction = false`.

use crate::helpers::*;
use crate::support::TestDb;

fn index_set() -> MigDir {
    let dir = MigDir::new();
    dir.add(
        "2024-01-01-000001_items",
        "CREATE TABLE items (id int, name text);\nINSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 100) g;",
        Some("DROP TABLE items;"),
    )
    .add(
        "2024-01-01-000002_items_name_idx",
        "-- one statement, outside a transaction\nCREATE INDEX CONCURRENTLY items_name_idx ON items (name);\n",
        Some("DROP INDEX CONCURRENTLY items_name_idx;"),
    )
    .file(
        "2024-01-01-000002_items_name_idx/metadata.toml",
        "run_in_transaction = false\n",
    );
    dir
}

#[test]
fn create_index_concurrently_runs_in_every_tenant() {
    let db = TestDb::new();
    create_schemas(&db, &["acme", "globex"]);
    let dir = index_set();
    let out = mt_dir(&db, &dir, &["--tenants", "acme,globex", "up"]);
    assert_code(&out, 0);
    for t in ["acme", "globex"] {
        assert_changed_line(
            &out.stdout,
            &format!("{t}: none -> 2024-01-01-000002_items_name_idx (2 applied"),
        );
        assert_eq!(history(&db, t), ["20240101000001", "20240101000002"]);
        assert_eq!(
            db.query(&format!(
                "SELECT i.indisvalid AND i.indisready FROM pg_index i \
                 WHERE i.indexrelid = '\"{t}\".items_name_idx'::regclass \
                 AND i.indrelid = '\"{t}\".items'::regclass"
            )),
            "t",
            "{t}.items_name_idx is not a valid index on {t}.items"
        );
    }
    assert_public_empty(&db);

    // down runs the non-transactional down.sql the same way.
    let out = mt_dir(&db, &dir, &["--tenants", "acme,globex", "down", "--yes"]);
    assert_code(&out, 0);
    for t in ["acme", "globex"] {
        assert!(!relation_exists(&db, t, "items_name_idx"));
        assert!(relation_exists(&db, t, "items"));
        assert_eq!(history(&db, t), ["20240101000001"]);
    }
}

#[test]
fn two_statements_without_a_transaction_are_refused() {
    let db = TestDb::new();
    create_schemas(&db, &["acme"]);
    let dir = MigDir::new();
    dir.add(
        "2024-01-01-000001_items",
        "CREATE TABLE items (id int, name text);",
        Some("DROP TABLE items;"),
    )
    .add(
        "2024-01-01-000002_two_indexes",
        "CREATE INDEX CONCURRENTLY items_id_idx ON items (id);\n\
         CREATE INDEX CONCURRENTLY items_name_idx ON items (name);\n",
        Some("DROP INDEX CONCURRENTLY items_name_idx;"),
    )
    .file(
        "2024-01-01-000002_two_indexes/metadata.toml",
        "run_in_transaction = false\n",
    );
    let before = snapshot(&db);
    let out = mt_dir(&db, &dir, &["--tenants", "acme", "up"]);
    assert_code(&out, 2);
    assert_contains(
        &out.stderr,
        &["2024-01-01-000002_two_indexes/up.sql", "run_in_transaction = false"],
    );
    assert_eq!(snapshot(&db), before);
}

#[test]
fn concurrently_inside_a_transaction_fails_and_rolls_back() {
    // Without metadata.toml the migration runs in a transaction, where PostgreSQL refuses
    // CONCURRENTLY: the tenant fails and nothing of the migration remains.
    let db = TestDb::new();
    create_schemas(&db, &["acme"]);
    let dir = MigDir::new();
    dir.add(
        "2024-01-01-000001_items",
        "CREATE TABLE items (id int, name text);\nCREATE INDEX CONCURRENTLY items_name_idx ON items (name);",
        Some("DROP TABLE items;"),
    );
    let out = mt_dir(&db, &dir, &["--tenants", "acme", "up"]);
    assert_code(&out, 1);
    assert_contains(
        line(&out.stdout, "acme: "),
        &["FAILED", "2024-01-01-000001_items", "CONCURRENTLY"],
    );
    assert!(!relation_exists(&db, "acme", "items"));
    assert!(history(&db, "acme").is_empty());
}

#[test]
fn a_begin_hidden_behind_a_numeric_literal_is_refused() {
    let db = TestDb::new();
    create_schemas(&db, &["nc"]);
    let dir = MigDir::new();
    // The `.` of `0.` must not hide the END: the file holds two statements, one a BEGIN
    // that would leave a transaction open and swallow the history row.
    dir.add(
        "2024-01-01-000001_f",
        "CREATE FUNCTION f(x int) RETURNS numeric LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN x > 0 THEN 1. ELSE 0. END; END;\nBEGIN;",
        Some("DROP FUNCTION f(int);"),
    )
    .file("2024-01-01-000001_f/metadata.toml", "run_in_transaction = false\n");
    let out = mt_dir(&db, &dir, &["--tenants", "nc", "up"]);
    assert_code(&out, 2);
    assert_contains(&out.stderr, &["2024-01-01-000001_f"]);
    assert!(history(&db, "nc").is_empty());
}
