//! `lint`: multi-tenant hazards found without a database, through the binary.

use crate::helpers::*;

const HAZARDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/lint_hazards");
const CLEAN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/lint_clean");

#[test]
fn lint_flags_every_hazard_with_file_line_why_and_fix() {
    let out = mt_bare(&["--migrations-dir", HAZARDS, "lint"]);
    assert_code(&out, 1);
    assert_contains(
        &out.stdout,
        &[
            "2024-03-01-000001_enable_ltree/up.sql:2: error[extension-without-schema]",
            "error[fixed-schema]",
            "warning[extension-in-tenant]",
            "warning[public-reference]",
            "error[public-reference]",
            "warning[empty-down-after-create]",
            "warning[database-wide-statement]",
            "2024-03-01-000009_index_posts_title/up.sql:1: warning[blocking-index]",
            "    why: ",
            "    fix: ",
            "lint: 9 migration(s) from",
            "4 error(s), 12 warning(s), 0 allowed",
        ],
    );
}

#[test]
fn lint_is_silent_on_a_fleet_safe_set_and_the_json_report_parses() {
    let out = mt_bare(&["--migrations-dir", CLEAN, "lint", "--deny-warnings"]);
    assert_code(&out, 0);
    assert_contains(&out.stdout, &["0 error(s), 0 warning(s)"]);
    let json = mt_bare(&["--migrations-dir", HAZARDS, "--format", "json", "lint"]);
    assert_code(&json, 1);
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).expect("one JSON document");
    let findings = doc["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 16);
    assert!(findings
        .iter()
        .all(|f| f["rule"].is_string() && f["line"].is_u64() && f["fix"].is_string()));
}

#[test]
fn warnings_fail_only_when_denied_and_rules_can_be_allowed() {
    let dir = MigDir::new();
    dir.add(
        "0001_posts",
        "CREATE TABLE posts (id int, title text);",
        Some("DROP TABLE posts;"),
    );
    dir.add(
        "0002_index",
        "CREATE INDEX posts_title ON posts (title);",
        Some("DROP INDEX posts_title;"),
    );
    assert_code(&mt_bare(&["--migrations-dir", dir.path_str(), "lint"]), 0);
    let denied = mt_bare(&["--migrations-dir", dir.path_str(), "lint", "--deny-warnings"]);
    assert_code(&denied, 1);
    assert_contains(&denied.stdout, &["warning[blocking-index]"]);
    let allowed = mt_bare(&[
        "--migrations-dir",
        dir.path_str(),
        "lint",
        "--deny-warnings",
        "--allow",
        "blocking-index",
    ]);
    assert_code(&allowed, 0);
    assert_contains(&allowed.stdout, &["1 allowed"]);
    let mut from_env = crate::support::cli();
    from_env.env("MIGRATE_TENANTS_LINT_ALLOW", "public-reference,blocking-index");
    let out = crate::support::run(from_env.args(["--migrations-dir", dir.path_str(), "lint", "--deny-warnings"]));
    assert_code(&out, 0);
    let typo = mt_bare(&["--migrations-dir", dir.path_str(), "lint", "--allow", "blocking-indx"]);
    assert_code(&typo, 2);
    assert_contains(&typo.stderr, &["no such rule", "blocking-index"]);
    // In the file itself.
    dir.file(
        "0002_index/up.sql",
        "-- The table is empty when this ships. migrate-tenants: allow(blocking-index)\nCREATE INDEX posts_title ON posts (title);",
    );
    assert_code(
        &mt_bare(&["--migrations-dir", dir.path_str(), "lint", "--deny-warnings"]),
        0,
    );
}
