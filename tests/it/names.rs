//! Tenant names are validated before any SQL: hostile, reserved, over-long and empty names
//! are never executed. In a hand-typed `--tenants` list they fail the run (exit 2); from a
//! file, a query or a pattern they are reported and skipped, unless --strict.

use crate::helpers::*;
use crate::support::TestDb;

fn hostile() -> Vec<String> {
    vec![
        "x\"; DROP SCHEMA public; --".to_string(),
        "x\"; CREATE SCHEMA pwned; --".to_string(),
        "a".repeat(64),
        "pg_x".to_string(),
        "Upper".to_string(),
        "public".to_string(),
        "information_schema".to_string(),
        "1abc".to_string(),
        "a-b".to_string(),
    ]
}

#[test]
fn each_invalid_name_is_reported_and_never_executed() {
    let db = TestDb::new();
    let before = snapshot(&db);
    for name in hostile() {
        let out = mt(&db, &["--tenants", &format!("acme,{name}"), "--create-missing", "up"]);
        assert_code(&out, 2);
        assert_contains(&out.stderr, &["invalid tenant name(s); no tenant was touched"]);
        assert!(out.stdout.is_empty(), "{name:?}: {}", out.stdout);
        assert_eq!(snapshot(&db), before, "{name:?} changed the database");
    }
    assert!(schema_exists(&db, "public"));
    assert!(!schema_exists(&db, "pwned"));
}

#[test]
fn invalid_names_are_skipped_and_valid_ones_still_run() {
    let db = TestDb::new();
    create_schemas(&db, &["acme"]);
    let names = hostile();
    let mut list: Vec<&str> = names.iter().map(String::as_str).collect();
    list.push("acme");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tenants.txt");
    std::fs::write(&file, list.join("\n")).unwrap();
    let file = file.to_str().unwrap();
    let out = mt(&db, &["--tenants-file", file, "--create-missing", "up"]);
    assert_code(&out, 0);
    assert_contains(&out.stdout, &["1 tenant(s)"]);
    assert_changed_line(
        &out.stdout,
        "acme: none -> 2024-01-01-000005_add_users_last_login_at (5 applied",
    );
    assert_eq!(
        out.stderr.matches("skipped invalid tenant name").count(),
        names.len(),
        "{}",
        out.stderr
    );
    assert_contains(&out.stderr, &["pg_x", "Upper", "64 bytes", "reserved"]);
    assert_eq!(user_schemas(&db), ["acme", "public"]);
    assert_public_empty(&db);

    // The JSON report lists them too.
    let out = mt(&db, &["--tenants-file", file, "--format", "json", "status"]);
    assert_code(&out, 0);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON report");
    assert_eq!(json["invalid_names"].as_array().map(Vec::len), Some(names.len()));
    assert_eq!(json["tenants"].as_array().map(Vec::len), Some(1));
}

#[test]
fn strict_makes_invalid_names_fatal_before_any_tenant_is_touched() {
    let db = TestDb::new();
    create_schemas(&db, &["acme"]);
    let before = snapshot(&db);
    for bad in ["pg_x", "Upper", "x\"; DROP SCHEMA public; --", ""] {
        let tenants = format!("acme,{bad}");
        let out = mt(&db, &["--tenants", &tenants, "--strict", "--create-missing", "up"]);
        assert_code(&out, 2);
        assert_contains(&out.stderr, &["invalid tenant name", "--strict"]);
        assert_eq!(snapshot(&db), before, "{bad:?}: the database changed");
    }
    assert!(!has_history(&db, "acme"));
}

#[test]
fn empty_names_are_refused() {
    let db = TestDb::new();
    let before = snapshot(&db);
    for tenants in ["", ",", " , ", "acme,"] {
        let out = mt(&db, &["--tenants", tenants, "--create-missing", "up"]);
        assert_code(&out, 2);
        assert_contains(&out.stderr, &["tenant name is empty"]);
    }
    assert_eq!(snapshot(&db), before);
}

#[test]
fn schema_pattern_never_selects_public_or_invalid_schemas() {
    let db = TestDb::new();
    create_schemas(&db, &["acme", "globex", "Upper"]);
    let out = mt(&db, &["--schema-pattern", "%", "up"]);
    assert_code(&out, 0);
    assert_contains(&out.stdout, &["2 tenant(s)"]);
    assert_contains(&out.stderr, &["skipped invalid tenant name", "Upper"]);
    for t in ["acme", "globex"] {
        assert_eq!(history(&db, t), versions(&BASIC));
    }
    assert!(!has_history(&db, "Upper"));
    assert_public_empty(&db);
}

#[test]
fn tenants_file_names_are_validated_too() {
    let db = TestDb::new();
    create_schemas(&db, &["acme"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tenants.txt");
    std::fs::write(
        &file,
        "# tenants\nacme\n\nx\"; DROP SCHEMA public; --\npg_x  # reserved\n",
    )
    .unwrap();
    let out = mt(&db, &["--tenants-file", file.to_str().unwrap(), "up"]);
    assert_code(&out, 0);
    assert_eq!(out.stderr.matches("skipped invalid tenant name").count(), 2);
    assert_eq!(history(&db, "acme"), versions(&BASIC));
    assert_eq!(user_schemas(&db), ["acme", "public"]);
}

#[test]
fn longest_and_underscore_names_are_valid_and_not_truncated() {
    let db = TestDb::new();
    let long = "t".repeat(63);
    let tenants = format!("{long},_x");
    let out = mt(&db, &["--tenants", &tenants, "--create-missing", "up"]);
    assert_code(&out, 0);
    assert_changed_line(
        &out.stdout,
        &format!("{long}: none -> 2024-01-01-000005_add_users_last_login_at (5 applied"),
    );
    assert_changed_line(
        &out.stdout,
        "_x: none -> 2024-01-01-000005_add_users_last_login_at (5 applied",
    );
    assert_eq!(user_schemas(&db), ["_x", "public", long.as_str()]);
    assert_eq!(history(&db, &long), versions(&BASIC));
    assert_eq!(history(&db, "_x"), versions(&BASIC));
}

#[test]
fn selection_deduplicates_includes_and_excludes() {
    let db = TestDb::new();
    create_schemas(&db, &["acme", "globex", "initech"]);
    let out = mt(
        &db,
        &["--tenants", "initech,acme,globex,acme", "--exclude", "globex", "up"],
    );
    assert_code(&out, 0);
    assert_contains(&out.stdout, &["2 tenant(s)"]);
    assert_eq!(out.stdout.matches("acme: ").count(), 1, "acme ran twice?");
    assert_eq!(history(&db, "acme"), versions(&BASIC));
    assert_eq!(history(&db, "initech"), versions(&BASIC));
    assert!(!has_history(&db, "globex"));

    let out = mt(&db, &["--tenants", "acme,globex,initech", "--tenant", "globex", "down"]);
    assert_code(&out, 0);
    assert_contains(&out.stdout, &["1 tenant(s)"]);
    assert_eq!(history(&db, "acme"), versions(&BASIC));
    assert!(!has_history(&db, "globex"));
    assert_contains(&out.stdout, &["globex: nothing to revert (at none)"]);
}
