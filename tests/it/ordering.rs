//! Ordering: `up` refuses a pending migration older than the tenant's newest applied one
//! (Flyway's out-of-order rule) unless `--allow-out-of-order`, and `up --to` a version the
//! tenant is already past says so.

use crate::helpers::*;
use crate::support::TestDb;
use migrate_tenants::{FailureKind, MigrationSet, Outcome, Runner, TenantSource};

fn set_without_the_middle() -> MigDir {
    let dir = MigDir::new();
    dir.add(
        "2024-03-01-000001_create_a",
        "CREATE TABLE a (id INT);",
        Some("DROP TABLE a;"),
    )
    .add(
        "2024-03-01-000003_create_c",
        "CREATE TABLE c (id INT);",
        Some("DROP TABLE c;"),
    );
    dir
}

fn add_the_middle(dir: &MigDir) {
    dir.add(
        "2024-03-01-000002_create_b",
        "CREATE TABLE b (id INT);",
        Some("DROP TABLE b;"),
    );
}

#[test]
fn out_of_order_migration_is_refused_naming_both_then_allowed() {
    let db = TestDb::new();
    let dir = set_without_the_middle();
    create_schemas(&db, &["acme", "globex"]);
    assert_code(&mt_dir(&db, &dir, &["--tenants", "acme", "up"]), 0);
    add_the_middle(&dir);

    let before = snapshot(&db);
    let refused = mt_dir(&db, &dir, &["--tenants", "acme,globex", "up"]);
    assert_code(&refused, 1);
    assert_contains(
        &refused.stdout,
        &[
            "acme: FAILED",
            "2024-03-01-000002_create_b is pending but older than 2024-03-01-000003_create_c",
            "--allow-out-of-order",
        ],
    );
    assert_eq!(history(&db, "acme"), ["20240301000001", "20240301000003"]);
    assert_eq!(
        history(&db, "globex"),
        ["20240301000001", "20240301000002", "20240301000003"],
        "a tenant without the problem is migrated"
    );
    assert!(!relation_exists(&db, "acme", "b"));
    let after: Vec<String> = snapshot(&db).into_iter().filter(|l| !l.contains("globex")).collect();
    let before: Vec<String> = before.into_iter().filter(|l| !l.contains("globex")).collect();
    assert_eq!(after, before, "the refused tenant was touched");

    let allowed = mt_dir(&db, &dir, &["--tenants", "acme", "up", "--allow-out-of-order"]);
    assert_code(&allowed, 0);
    assert_eq!(
        history(&db, "acme"),
        ["20240301000001", "20240301000002", "20240301000003"]
    );
}

#[test]
fn library_reports_out_of_order_as_its_own_failure() {
    let db = TestDb::new();
    let dir = set_without_the_middle();
    create_schemas(&db, &["acme"]);
    assert_code(&mt_dir(&db, &dir, &["--tenants", "acme", "up"]), 0);
    add_the_middle(&dir);
    let runner = Runner::new(MigrationSet::from_dir(dir.path()).expect("set"))
        .database_url(&db.url)
        .tenants(TenantSource::list(["acme"]));
    let report = runner.up().expect("run");
    match &report.tenants[0].outcome {
        Outcome::Failed { failure, .. } => assert_eq!(*failure, FailureKind::OutOfOrder),
        other => panic!("expected an out-of-order failure, got {other:?}"),
    }
    let plan = runner.clone().dry_run(true).up().expect("dry run");
    assert!(plan.tenants[0].failed(), "a dry run predicts the refusal");
    let report = runner.allow_out_of_order(true).up().expect("run");
    assert_eq!(report.tenants[0].applied, ["20240301000002"]);
}

#[test]
fn up_to_a_version_below_the_current_one_says_already_past() {
    let db = TestDb::new();
    create_schemas(&db, &["acme"]);
    assert_code(&mt(&db, &["--tenants", "acme", "up"]), 0);
    let out = mt(&db, &["--tenants", "acme", "up", "--to", "2024-01-01-000002"]);
    assert_code(&out, 0);
    assert_contains(
        &out.stdout,
        &["acme: already past 2024-01-01-000002_create_users (at 2024-01-01-000005_add_users_last_login_at): nothing to apply"],
    );
    assert!(!out.stdout.contains("up to date"), "{}", out.stdout);
    let json = mt(
        &db,
        &["--format", "json", "--tenants", "acme", "up", "--to", "20240101000002"],
    );
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(doc["tenants"][0]["past_target"], "2024-01-01-000002_create_users");
}
