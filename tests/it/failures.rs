//! A migration failing in one tenant, --fail-fast, and tenants whose schema is missing.

use crate::helpers::*;
use crate::support::TestDb;

const SECOND: &str = "2024-01-01-000002_second";

/// Three migrations; the second fails only in schema `bad`, after creating a table.
fn fails_in_bad() -> MigDir {
    let dir = MigDir::new();
    dir.add(
        "2024-01-01-000001_first",
        "CREATE TABLE m1 (id int);",
        Some("DROP TABLE m1;"),
    )
    .add(
        SECOND,
        "CREATE TABLE m2 (id int);\n\
         DO $$ BEGIN IF current_schema() = 'bad' THEN RAISE EXCEPTION 'boom'; END IF; END $$;\n",
        Some("DROP TABLE m2;"),
    )
    .add(
        "2024-01-01-000003_third",
        "CREATE TABLE m3 (id int);",
        Some("DROP TABLE m3;"),
    );
    dir
}

const ALL: [&str; 3] = ["20240101000001", "20240101000002", "20240101000003"];

#[test]
fn a_failing_tenant_does_not_stop_the_others() {
    let db = TestDb::new();
    create_schemas(&db, &["good1", "bad", "good2"]);
    let dir = fails_in_bad();
    let out = mt_dir(&db, &dir, &["--tenants", "good1,bad,good2", "up"]);
    assert_code(&out, 1);

    for t in ["good1", "good2"] {
        assert_eq!(history(&db, t), ALL, "history of {t}");
        assert_eq!(tables_in(&db, t), ["__diesel_schema_migrations", "m1", "m2", "m3"]);
        assert_changed_line(&out.stdout, &format!("{t}: none -> 2024-01-01-000003_third (3 applied"));
    }
    assert_eq!(history(&db, "bad"), ["20240101000001"]);
    assert_eq!(tables_in(&db, "bad"), ["__diesel_schema_migrations", "m1"]);
    assert_public_empty(&db);

    // The summary names the tenant, the migration and PostgreSQL's message.
    let (_, summary) = out
        .stdout
        .split_once("failed tenants:")
        .expect("a failed-tenants section");
    let bad = line(summary.trim_start(), "bad: ");
    assert_contains(
        bad,
        &[
            "FAILED",
            SECOND,
            "boom",
            "rolled back",
            "after 1 applied",
            "left at 2024-01-01-000001_first",
        ],
    );
    assert_contains(
        &out.stdout,
        &["up: 3 tenant(s): 2 changed, 0 unchanged, 1 failed, 0 skipped; 7 migration(s) applied"],
    );

    // Running again retries only the failed tenant, which fails the same way.
    let out = mt_dir(&db, &dir, &["--tenants", "good1,bad,good2", "up"]);
    assert_code(&out, 1);
    assert_contains(&out.stdout, &["good1: up to date at 2024-01-01-000003_third"]);
    assert_eq!(history(&db, "bad"), ["20240101000001"]);
}

#[test]
fn json_report_describes_the_failure() {
    let db = TestDb::new();
    create_schemas(&db, &["good1", "bad"]);
    let dir = fails_in_bad();
    let out = mt_dir(&db, &dir, &["--tenants", "good1,bad", "--format", "json", "up"]);
    assert_code(&out, 1);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON report");
    assert_eq!(json["command"], "up");
    assert_eq!(json["summary"]["failed"], 1);
    assert_eq!(json["summary"]["changed"], 1);
    let tenants = json["tenants"].as_array().expect("tenants");
    let bad = tenants.iter().find(|t| t["schema"] == "bad").expect("bad's report");
    assert_eq!(bad["kind"], "failed");
    assert_eq!(bad["migration"], SECOND);
    assert!(bad["error"].as_str().unwrap().contains("boom"), "{bad}");
    assert_eq!(bad["version_after"], "20240101000001");
    assert_eq!(bad["applied"], serde_json::json!(["20240101000001"]));
    let good = tenants.iter().find(|t| t["schema"] == "good1").expect("good1's report");
    assert_eq!(good["kind"], "changed");
    assert_eq!(good["applied"], serde_json::json!(ALL));
}

#[test]
fn fail_fast_skips_the_tenants_after_the_failure() {
    let db = TestDb::new();
    // Tenants run in name order with one worker: a_good, bad, c_good, d_good.
    create_schemas(&db, &["a_good", "bad", "c_good", "d_good"]);
    let dir = fails_in_bad();
    let before_c = snapshot(&db)
        .into_iter()
        .filter(|o| o.contains("c_good") || o.contains("d_good"))
        .collect::<Vec<_>>();
    let out = mt_dir(
        &db,
        &dir,
        &[
            "--tenants",
            "d_good,c_good,bad,a_good",
            "--concurrency",
            "1",
            "--fail-fast",
            "up",
        ],
    );
    assert_code(&out, 1);
    assert_eq!(history(&db, "a_good"), ALL);
    assert_eq!(history(&db, "bad"), ["20240101000001"]);
    for t in ["c_good", "d_good"] {
        assert_contains(
            line(&out.stdout, &format!("{t}: ")),
            &["skipped", "stops at the first failure"],
        );
        assert!(!has_history(&db, t), "{t} was touched");
        assert!(tables_in(&db, t).is_empty());
    }
    let after_c = snapshot(&db)
        .into_iter()
        .filter(|o| o.contains("c_good") || o.contains("d_good"))
        .collect::<Vec<_>>();
    assert_eq!(after_c, before_c);
    assert_contains(&out.stdout, &["1 failed, 2 skipped"]);
}

#[test]
fn missing_schema_fails_by_default() {
    let db = TestDb::new();
    create_schemas(&db, &["present"]);
    let out = mt(&db, &["--tenants", "present,absent", "up"]);
    assert_code(&out, 1);
    let absent = line(&out.stdout, "absent: ");
    assert_contains(absent, &["FAILED", "does not exist", "--missing"]);
    assert!(!schema_exists(&db, "absent"));
    assert_eq!(history(&db, "present"), versions(&BASIC));
    assert_contains(
        out.stdout.split_once("failed tenants:").expect("summary").1,
        &["absent"],
    );
}

#[test]
fn missing_schema_is_skipped_with_missing_skip() {
    let db = TestDb::new();
    create_schemas(&db, &["present"]);
    let out = mt(&db, &["--tenants", "present,absent", "--missing", "skip", "up"]);
    assert_code(&out, 0);
    assert_contains(line(&out.stdout, "absent: "), &["skipped", "does not exist"]);
    assert_contains(&out.stdout, &["1 changed, 0 unchanged, 0 failed, 1 skipped"]);
    assert!(!schema_exists(&db, "absent"));
    assert_eq!(history(&db, "present"), versions(&BASIC));
}

#[test]
fn missing_schema_is_created_with_create_missing() {
    for flags in [vec!["--create-missing"], vec!["--missing", "create"]] {
        let db = TestDb::new();
        create_schemas(&db, &["present"]);
        let mut args = vec!["--tenants", "present,absent"];
        args.extend(&flags);
        args.push("up");
        let out = mt(&db, &args);
        assert_code(&out, 0);
        assert_changed_line(
            &out.stdout,
            "absent: none -> 2024-01-01-000005_add_users_last_login_at (5 applied",
        );
        assert!(schema_exists(&db, "absent"));
        assert_eq!(history(&db, "absent"), versions(&BASIC));
        assert!(relation_exists(&db, "absent", "tasks"));
        assert_eq!(history(&db, "present"), versions(&BASIC));
        assert_public_empty(&db);
    }
}

#[test]
fn the_error_names_the_line_of_up_sql() {
    let db = TestDb::new();
    create_schemas(&db, &["acme"]);
    let dir = MigDir::new();
    dir.add(
        "2024-01-01-000001_typo",
        "-- header\nCREATE TABLE a (id int);\nCREATE TABLE b (id int);\nSELECT * FROM nonexistent;\n",
        Some("DROP TABLE b; DROP TABLE a;"),
    );
    let out = mt_dir(&db, &dir, &["--tenants", "acme", "up"]);
    assert_code(&out, 1);
    assert_contains(
        line(&out.stdout, "acme: "),
        &[
            "2024-01-01-000001_typo",
            "up.sql: line 4: relation \"nonexistent\" does not exist",
            "rolled back",
        ],
    );
    assert!(!relation_exists(&db, "acme", "a"));
    assert!(history(&db, "acme").is_empty());
}

#[test]
fn quiet_prints_only_failures_and_the_summary() {
    let db = TestDb::new();
    create_schemas(&db, &["good1", "bad", "good2"]);
    let dir = fails_in_bad();
    let out = mt_dir(&db, &dir, &["--tenants", "good1,bad,good2", "--quiet", "up"]);
    assert_code(&out, 1);
    assert!(!out.stdout.contains("good1"), "{}", out.stdout);
    assert!(!out.stdout.contains("tenant(s)\n"), "{}", out.stdout);
    assert_eq!(out.stdout.matches("bad: FAILED").count(), 1, "once, in the summary");
    assert_contains(&out.stdout, &["up: 3 tenant(s): 2 changed"]);
    assert_eq!(history(&db, "good2"), ALL);
}

#[test]
fn fail_fast_also_stops_after_a_missing_schema() {
    let db = TestDb::new();
    create_schemas(&db, &["b_ok"]);
    let out = mt(
        &db,
        &["--tenants", "a_missing,b_ok", "--fail-fast", "--concurrency", "1", "up"],
    );
    assert_code(&out, 1);
    assert_contains(line(&out.stdout, "a_missing: "), &["FAILED", "--missing"]);
    // "Stop starting new tenants after the first failure."
    assert_contains(line(&out.stdout, "b_ok: "), &["skipped", "stops at the first failure"]);
    assert!(!has_history(&db, "b_ok"));
}
