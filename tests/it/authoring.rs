//! `verify` (scratch schemas, always rolled back) and `drift` (tenants that differ at the same
//! version), against a real PostgreSQL.

use crate::helpers::*;
use crate::support::{self, TestDb};

fn verify(db: &TestDb, dir: &MigDir) -> support::Out {
    mt_dir(db, dir, &["--format", "json", "verify"])
}

fn problems(out: &support::Out) -> Vec<serde_json::Value> {
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("one JSON document");
    doc["problems"].as_array().unwrap().clone()
}

fn users() -> MigDir {
    let dir = MigDir::new();
    dir.add(
        "0001_users",
        "CREATE TABLE users (id int PRIMARY KEY, email text);",
        Some("DROP TABLE users;"),
    );
    dir
}

#[test]
fn verify_passes_on_a_correct_set_and_leaves_the_database_untouched() {
    let db = TestDb::new();
    create_schemas(&db, &["acme"]);
    let before = snapshot(&db);
    let out = mt(&db, &["verify"]);
    assert_code(&out, 0);
    assert_contains(
        &out.stdout,
        &["verify: 5 migration(s), 5 down.sql checked: 0 problem(s)"],
    );
    assert_eq!(snapshot(&db), before, "verify changed the database");
}

#[test]
fn verify_catches_down_sql_that_does_not_undo_its_up_sql() {
    let db = TestDb::new();
    let before = snapshot(&db);
    // A down.sql that forgets an index.
    let forgets = users();
    forgets.add(
        "0002_users_email",
        "CREATE INDEX users_email ON users (email);\nALTER TABLE users ADD COLUMN name text;",
        Some("ALTER TABLE users DROP COLUMN name;"),
    );
    let out = verify(&db, &forgets);
    assert_code(&out, 1);
    let p = problems(&out);
    assert_eq!(p[0]["migration"], "0002_users_email");
    assert_eq!(p[0]["kind"], "down-does-not-restore");
    assert!(p[0]["differences"].to_string().contains("+ index users_email"), "{p:?}");

    // One that drops a column of another table.
    let other = users();
    other.add(
        "0002_orders",
        "CREATE TABLE orders (id int, note text);",
        Some("DROP TABLE orders;"),
    );
    other.add(
        "0003_orders_total",
        "ALTER TABLE orders ADD COLUMN total int;",
        Some("ALTER TABLE orders DROP COLUMN total;\nALTER TABLE users DROP COLUMN email;"),
    );
    let out = verify(&db, &other);
    assert_code(&out, 1);
    let p = problems(&out);
    assert_eq!(p[0]["migration"], "0003_orders_total");
    assert!(
        p[0]["differences"].to_string().contains("- column users.email"),
        "{p:?}"
    );

    // An empty down.sql after an ADD COLUMN: down restores nothing, and up fails again.
    let empty = users();
    empty.add(
        "0002_users_name",
        "ALTER TABLE users ADD COLUMN name text;",
        Some("-- nothing"),
    );
    let out = verify(&db, &empty);
    assert_code(&out, 1);
    let kinds: Vec<String> = problems(&out)
        .iter()
        .map(|p| p["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["down-does-not-restore", "reapply-failed"]);
    assert_eq!(snapshot(&db), before, "verify never leaves anything behind");
}

#[test]
fn verify_catches_a_set_that_is_not_confined_to_the_tenant_schema() {
    let db = TestDb::new();
    let before = snapshot(&db);
    // A table in public.
    let public = users();
    public.add(
        "0002_audit",
        "CREATE TABLE public.audit_log (id int);",
        Some("DROP TABLE public.audit_log;"),
    );
    let out = verify(&db, &public);
    assert_code(&out, 1);
    let p = problems(&out);
    assert_eq!(p.last().unwrap()["kind"], "outside-tenant-schema");
    assert!(
        p.last().unwrap()["differences"]
            .to_string()
            .contains("+ public: relation audit_log"),
        "{p:?}"
    );

    // An extension installed without SCHEMA (it lands in the tenant's schema, database-wide).
    let extension = users();
    extension.add(
        "0002_hstore",
        "CREATE EXTENSION IF NOT EXISTS hstore;",
        Some("DROP EXTENSION hstore;"),
    );
    let out = verify(&db, &extension);
    assert_code(&out, 1);
    let p = problems(&out);
    assert!(
        p.iter().any(|p| p["kind"] == "outside-tenant-schema"
            && p["differences"]
                .to_string()
                .contains("+ extension hstore in schema migrate_tenants_verify_")),
        "{p:?}"
    );
    assert_eq!(snapshot(&db), before, "verify never leaves anything behind");
}

#[test]
fn verify_can_run_on_a_throwaway_cluster_of_its_own() {
    let out = support::run(support::cli().args(["verify", "--ephemeral"]));
    assert_code(&out, 0);
    assert_contains(&out.stdout, &["0 problem(s)"]);
}

#[test]
fn drift_finds_tenants_changed_by_hand_and_nothing_on_a_clean_fleet() {
    let db = TestDb::new();
    create_schemas(&db, &["dr1", "dr2", "dr3", "dr4"]);
    assert_code(&mt(&db, &["--tenants", "dr1,dr2,dr3,dr4", "up"]), 0);
    let clean = mt(&db, &["--tenants", "dr1,dr2,dr3,dr4", "drift"]);
    assert_code(&clean, 0);
    assert_contains(&clean.stdout, &["0 drifted"]);
    db.exec("DROP INDEX dr2.users_email_key; ALTER TABLE dr3.tasks ADD COLUMN hotfix int;");
    let out = mt(&db, &["--tenants", "dr1,dr2,dr3,dr4", "--format", "json", "drift"]);
    assert_code(&out, 1);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let drifted = doc["drifted"].as_array().unwrap();
    assert_eq!(drifted.len(), 2);
    assert_eq!(drifted[0]["tenant"], "dr2");
    assert!(drifted[0]["differences"]
        .to_string()
        .contains("- index users_email_key"));
    assert_eq!(drifted[1]["tenant"], "dr3");
    assert!(drifted[1]["differences"]
        .to_string()
        .contains("+ column tasks.hotfix integer"));
    // Tenants at different versions are compared only with their own version.
    assert_code(&mt(&db, &["--tenants", "dr4", "down"]), 0);
    db.exec(
        "ALTER TABLE dr3.tasks DROP COLUMN hotfix; CREATE UNIQUE INDEX users_email_key ON dr2.users (lower(email));",
    );
    assert_code(&mt(&db, &["--tenants", "dr1,dr2,dr3,dr4", "drift"]), 0);
}
