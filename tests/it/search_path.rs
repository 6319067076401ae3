//! Migrations must not change search_path: statically at validation, dynamically at run time.

use crate::helpers::*;
use crate::support::TestDb;

#[test]
fn set_search_path_is_refused_at_validation() {
    let statements = [
        "SET search_path TO other;",
        "set local search_path = public;",
        "SET SESSION search_path TO public;",
        "SET SCHEMA 'public';",
        "RESET search_path;",
    ];
    for statement in statements {
        let db = TestDb::new();
        create_schemas(&db, &["acme", "other"]);
        let dir = MigDir::new();
        dir.add(
            "2024-01-01-000001_fine",
            "CREATE TABLE fine (id int);",
            Some("DROP TABLE fine;"),
        )
        .add(
            "2024-01-01-000002_switch_path",
            &format!("CREATE TABLE a (id int);\n{statement}\nCREATE TABLE b (id int);\n"),
            Some("DROP TABLE b; DROP TABLE a;"),
        );
        let before = snapshot(&db);
        let out = mt_dir(&db, &dir, &["--tenants", "acme", "up"]);
        assert_code(&out, 2);
        assert_contains(&out.stderr, &["2024-01-01-000002_switch_path/up.sql", "search_path"]);
        assert_eq!(snapshot(&db), before, "database changed for {statement:?}");
    }
}

/// Two tenants, `a_first` and `b_second`, run one after the other on the same pooled
/// connection (--concurrency 1). Migration 2 switches search_path to public only in
/// `a_first`, with `switch`, then creates a table (which would land in public).
fn dynamic_switch(switch: &str) {
    let db = TestDb::new();
    create_schemas(&db, &["a_first", "b_second"]);
    let dir = MigDir::new();
    dir.add(
        "2024-01-01-000001_base",
        "CREATE TABLE base (id int);",
        Some("DROP TABLE base;"),
    )
    .add(
        "2024-01-01-000002_switch",
        &format!(
            "CREATE TABLE before_switch (id int);\n\
             DO $$ BEGIN IF current_schema() = 'a_first' THEN {switch} END IF; END $$;\n\
             CREATE TABLE after_switch (id int);\n\
             CREATE TABLE path_seen AS SELECT current_setting('search_path') AS path;\n"
        ),
        Some("DROP TABLE path_seen; DROP TABLE after_switch; DROP TABLE before_switch;"),
    );

    let out = mt_dir(
        &db,
        &dir,
        &["--tenants", "a_first,b_second", "--concurrency", "1", "up"],
    );
    assert_code(&out, 1);
    let failed = line(&out.stdout, "a_first: ");
    assert_contains(
        failed,
        &["FAILED", "2024-01-01-000002_switch", "search_path", "rolled back"],
    );

    // Nothing of migration 2 exists anywhere for a_first, and it has no history row.
    assert_eq!(history(&db, "a_first"), ["20240101000001"]);
    assert_eq!(tables_in(&db, "a_first"), ["__diesel_schema_migrations", "base"]);
    assert_public_empty(&db);

    // b_second ran on the connection a_first used and still migrated into its own schema.
    assert_changed_line(&out.stdout, "b_second: none -> 2024-01-01-000002_switch (2 applied");
    assert_eq!(history(&db, "b_second"), ["20240101000001", "20240101000002"]);
    assert_eq!(
        tables_in(&db, "b_second"),
        [
            "__diesel_schema_migrations",
            "after_switch",
            "base",
            "before_switch",
            "path_seen"
        ]
    );
    assert_eq!(
        db.query("SELECT path FROM b_second.path_seen"),
        "\"b_second\", \"public\""
    );
}

#[test]
fn set_config_search_path_is_rolled_back_and_does_not_leak() {
    dynamic_switch("PERFORM set_config('search_path', 'public', false);");
}

#[test]
fn execute_set_search_path_is_rolled_back_and_does_not_leak() {
    dynamic_switch("EXECUTE 'SET search_path TO public';");
}

#[test]
fn top_level_select_set_config_is_rolled_back() {
    // The plain statement form: every tenant fails; nothing leaks into public.
    let db = TestDb::new();
    create_schemas(&db, &["acme", "globex"]);
    let dir = MigDir::new();
    dir.add(
        "2024-01-01-000001_sneaky",
        "SELECT set_config('search_path', 'public', false);\nCREATE TABLE sneaky (id int);",
        Some("DROP TABLE sneaky;"),
    );
    let out = mt_dir(&db, &dir, &["--tenants", "acme,globex", "--concurrency", "1", "up"]);
    assert_code(&out, 1);
    for t in ["acme", "globex"] {
        assert_contains(
            line(&out.stdout, &format!("{t}: ")),
            &["FAILED", "2024-01-01-000001_sneaky", "search_path"],
        );
        assert!(history(&db, t).is_empty());
        assert!(!relation_exists(&db, t, "sneaky"));
    }
    assert_public_empty(&db);
}
