//! Shared-schema migrations: run before any tenant, stop the run when they fail, and are
//! left alone by `down` unless `--shared` is given.

use crate::helpers::*;
use crate::support::TestDb;

fn shared_set(registry_up: &str) -> MigDir {
    let dir = MigDir::new();
    dir.add(
        "2024-01-01-000001_registry",
        registry_up,
        Some("DROP TABLE tenant_registry;"),
    );
    dir
}

const REGISTRY: &str = "CREATE TABLE tenant_registry (schema_name text PRIMARY KEY, active boolean NOT NULL); \
     INSERT INTO tenant_registry VALUES ('ra', true), ('rb', true), ('rc', false);";

fn up_with_shared(db: &TestDb, shared: &MigDir, extra: &[&str]) -> crate::support::Out {
    let mut args = vec![
        "--shared-migrations-dir",
        shared.path_str(),
        "--tenants-query",
        "SELECT schema_name FROM public.tenant_registry WHERE active",
        "--missing",
        "create",
    ];
    args.extend_from_slice(extra);
    mt(db, &args)
}

#[test]
fn shared_migrations_run_first_and_feed_the_tenants_query() {
    let db = TestDb::new();
    let shared = shared_set(REGISTRY);
    let out = up_with_shared(&db, &shared, &["up"]);
    assert_code(&out, 0);
    assert_contains(&out.stdout, &["11 migration(s) applied"]); // 1 shared + 2 tenants x 5
    let mut lines = out.stdout.lines();
    assert!(
        lines.next().unwrap_or("").contains("; shared: 1 from "),
        "{}",
        out.stdout
    );
    let first = lines.next().unwrap_or("");
    assert!(
        first.starts_with("shared schema public: none -> 2024-01-01-000001_registry"),
        "{}",
        out.stdout
    );
    assert_eq!(history(&db, "public"), versions(&["20240101000001"]));
    assert_eq!(history(&db, "ra"), versions(&BASIC));
    assert_eq!(history(&db, "rb"), versions(&BASIC));
    assert!(!schema_exists(&db, "rc"));

    let status = up_with_shared(&db, &shared, &["status"]);
    assert_code(&status, 0);
    assert!(
        status
            .stdout
            .lines()
            .nth(1)
            .is_some_and(|l| l == "shared schema public: 2024-01-01-000001_registry (1 applied, 0 pending)"),
        "{}",
        status.stdout
    );
}

#[test]
fn failing_shared_migrations_touch_no_tenant() {
    let db = TestDb::new();
    create_schemas(&db, &["ta", "tb"]);
    let shared = MigDir::new();
    shared.add(
        "2024-01-01-000001_broken",
        "CREATE TABLE x (id int); SELECT no_such_function();",
        None,
    );
    let out = mt(
        &db,
        &["--shared-migrations-dir", shared.path_str(), "--tenants", "ta,tb", "up"],
    );
    assert_code(&out, 1);
    assert_contains(
        &out.stdout,
        &["shared schema failed; no tenant was touched", "no_such_function"],
    );
    assert!(!has_history(&db, "ta") && !has_history(&db, "tb"));
    assert!(!relation_exists(&db, "public", "x"));
}

#[test]
fn down_leaves_the_shared_schema_alone_unless_asked() {
    let db = TestDb::new();
    let shared = shared_set(REGISTRY);
    assert_code(&up_with_shared(&db, &shared, &["up"]), 0);

    let down = up_with_shared(&db, &shared, &["down", "--yes"]);
    assert_code(&down, 0);
    assert_eq!(history(&db, "public"), versions(&["20240101000001"]));
    assert_eq!(history(&db, "ra"), versions(&BASIC[..4]));

    let with_shared = up_with_shared(&db, &shared, &["down", "--shared", "--yes"]);
    assert_code(&with_shared, 0);
    assert_eq!(history(&db, "ra"), versions(&BASIC[..3]));
    assert!(history(&db, "public").is_empty());
    assert!(!relation_exists(&db, "public", "tenant_registry"));
}

#[test]
fn up_to_a_tenant_version_still_runs_the_whole_shared_set() {
    let db = TestDb::new();
    let shared = shared_set(REGISTRY);
    let out = up_with_shared(&db, &shared, &["up", "--to", BASIC[1]]);
    assert_code(&out, 0);
    assert_eq!(history(&db, "public"), versions(&["20240101000001"]));
    assert_eq!(history(&db, "ra"), versions(&BASIC[..2]));
}

#[test]
fn the_shared_schema_is_never_a_tenant() {
    let db = TestDb::new();
    create_schemas(&db, &["shared_stuff", "ta"]);
    let shared = MigDir::new();
    shared.add(
        "2024-01-01-000001_lookup",
        "CREATE TABLE lookup (id int);",
        Some("DROP TABLE lookup;"),
    );
    let out = mt(
        &db,
        &[
            "--shared-schema",
            "shared_stuff",
            "--shared-migrations-dir",
            shared.path_str(),
            "--schema-pattern",
            "%",
            "up",
        ],
    );
    assert_code(&out, 0);
    assert_contains(&out.stderr, &["\"shared_stuff\" is the shared schema, never a tenant"]);
    assert_eq!(history(&db, "shared_stuff"), versions(&["20240101000001"]));
    assert_eq!(history(&db, "ta"), versions(&BASIC));
    assert!(relation_exists(&db, "shared_stuff", "lookup"));
    assert!(!relation_exists(&db, "shared_stuff", "users"));
}

#[test]
fn a_bad_tenant_list_stops_the_run_before_the_shared_migrations() {
    let db = TestDb::new();
    let shared = shared_set(REGISTRY);
    let before = snapshot(&db);
    let out = mt(
        &db,
        &[
            "--shared-migrations-dir",
            shared.path_str(),
            "--tenants",
            "ok,Bad",
            "up",
        ],
    );
    assert_code(&out, 2);
    let out = mt(
        &db,
        &[
            "--shared-migrations-dir",
            shared.path_str(),
            "--tenants-file",
            "/nonexistent",
            "up",
        ],
    );
    assert_code(&out, 2);
    assert_eq!(snapshot(&db), before, "exit 2 promises nothing was changed");
}

#[test]
fn down_shared_refuses_an_irreversible_shared_migration_before_any_tenant() {
    let db = TestDb::new();
    create_schemas(&db, &["ta"]);
    let shared = MigDir::new();
    shared.add("2024-01-01-000001_forever", "CREATE TABLE forever (id int);", None);
    let args = ["--shared-migrations-dir", shared.path_str(), "--tenants", "ta"];
    assert_code(&mt(&db, &[&args[..], &["up"]].concat()), 0);
    let out = mt(&db, &[&args[..], &["down", "--shared"]].concat());
    assert_code(&out, 2);
    assert_contains(
        &out.stderr,
        &["2024-01-01-000001_forever has no down.sql", "nothing was changed"],
    );
    assert_eq!(history(&db, "ta"), versions(&BASIC));
    assert_eq!(history(&db, "public"), versions(&["20240101000001"]));
}

#[test]
fn lifecycle_commands_refuse_the_shared_schema() {
    let db = TestDb::new();
    let shared = MigDir::new();
    shared.add(
        "2024-01-01-000001_registry",
        "CREATE TABLE registry (id int);",
        Some("DROP TABLE registry;"),
    );
    let args = [
        "--shared-schema",
        "registry_home",
        "--shared-migrations-dir",
        shared.path_str(),
    ];
    assert_code(
        &mt(
            &db,
            &[&args[..], &["--tenants", "t1", "--missing", "create", "up"]].concat(),
        ),
        0,
    );
    let drop = mt(
        &db,
        &[&args[..], &["tenant", "drop", "registry_home", "--yes", "--force"]].concat(),
    );
    assert_code(&drop, 2);
    assert_contains(&drop.stderr, &["is the shared schema, never a tenant"]);
    assert!(relation_exists(&db, "registry_home", "registry"));
    assert_code(
        &mt(
            &db,
            &[&args[..], &["tenant", "create", "registry_home", "--if-not-exists"]].concat(),
        ),
        2,
    );
}
