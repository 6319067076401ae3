//! Tenant discovery (list, file, query, pattern), selection, and the tenant lifecycle
//! commands (`tenant create`, `tenant drop`, `tenant list`).

use crate::helpers::*;
use crate::support::{self, TestDb};
use std::io::Write;
use std::process::Stdio;

fn migrated(db: &TestDb, schema: &str) -> bool {
    history(db, schema) == versions(&BASIC)
}

#[test]
fn tenants_file_with_comments_and_stdin() {
    let db = TestDb::new();
    create_schemas(&db, &["fa", "fb", "fc"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tenants.txt");
    std::fs::write(&file, "# fleet\nfa\n\n  fb   # trailing comment\nfa\n").unwrap();
    let out = mt(&db, &["--tenants-file", file.to_str().unwrap(), "up"]);
    assert_code(&out, 0);
    assert_contains(&out.stdout, &["2 tenant(s)"]);
    assert!(migrated(&db, "fa") && migrated(&db, "fb"));
    assert!(!has_history(&db, "fc"));

    let mut cmd = cmd(&db, &["--tenants-file", "-", "up"]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"fc\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(migrated(&db, "fc"));
}

#[test]
fn unreadable_tenants_file_is_a_usage_error() {
    let db = TestDb::new();
    let out = mt(&db, &["--tenants-file", "/nonexistent/tenants.txt", "up"]);
    assert_code(&out, 2);
    assert_contains(&out.stderr, &["cannot read the tenants file /nonexistent/tenants.txt"]);
}

#[test]
fn tenants_query_selects_active_tenants() {
    let db = TestDb::new();
    create_schemas(&db, &["qa", "qb", "qc"]);
    db.exec(
        "CREATE TABLE public.registry (schema_name text, active boolean); \
         INSERT INTO public.registry VALUES ('qa', true), ('qb', false), ('qc', true);",
    );
    let out = mt(
        &db,
        &[
            "--tenants-query",
            "SELECT schema_name FROM public.registry WHERE active;",
            "up",
        ],
    );
    assert_code(&out, 0);
    assert!(migrated(&db, "qa") && migrated(&db, "qc"));
    assert!(!has_history(&db, "qb"));
}

#[test]
fn tenants_query_errors_are_clear() {
    let db = TestDb::new();
    db.exec("CREATE SEQUENCE public.s;");
    let before = snapshot(&db);
    let out = mt(&db, &["--tenants-query", "SELECT 42", "up"]);
    assert_code(&out, 2);
    assert_contains(&out.stderr, &["tenants query", "integer", "not text"]);
    let out = mt(&db, &["--tenants-query", "SELECT name FROM no_such_table", "up"]);
    assert_code(&out, 2);
    assert_contains(&out.stderr, &["tenants query failed", "no_such_table"]);
    // Read-only: a query that writes is refused by PostgreSQL.
    let out = mt(&db, &["--tenants-query", "SELECT 't' || nextval('public.s')", "up"]);
    assert_code(&out, 2);
    assert_contains(&out.stderr, &["read-only transaction"]);
    assert_eq!(db.query("SELECT is_called FROM public.s"), "f");
    assert_eq!(snapshot(&db), before);
}

#[test]
fn invalid_names_from_a_query_are_skipped_and_reported_never_executed() {
    let db = TestDb::new();
    create_schemas(&db, &["good", "Bad Name"]);
    let query = "SELECT unnest(ARRAY['good', 'Bad Name', 'x\"; DROP SCHEMA good CASCADE; --', 'pg_toast', 'public'])";
    let out = mt(&db, &["--tenants-query", query, "up"]);
    assert_code(&out, 0);
    assert_contains(&out.stdout, &["1 tenant(s)"]);
    assert_contains(
        &out.stderr,
        &[
            "skipped invalid tenant name",
            "Bad Name",
            "DROP SCHEMA",
            "pg_toast",
            "\"public\"",
        ],
    );
    assert!(migrated(&db, "good"));
    assert!(!has_history(&db, "Bad Name"));
    assert!(!has_history(&db, "public"));

    let json = mt(&db, &["--tenants-query", query, "--format", "json", "status"]);
    assert_code(&json, 0);
    let report: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(report["invalid_names"].as_array().unwrap().len(), 4);

    let before = snapshot(&db);
    let strict = mt(&db, &["--tenants-query", query, "--strict", "down", "--yes"]);
    assert_code(&strict, 2);
    assert_contains(&strict.stderr, &["--strict", "Bad Name"]);
    assert_eq!(snapshot(&db), before, "--strict must fail before touching anything");
}

#[test]
fn schema_pattern_matches_only_existing_non_system_schemas() {
    let db = TestDb::new();
    create_schemas(&db, &["tn_a", "tn_b", "other"]);
    let out = mt(&db, &["--schema-pattern", "tn\\_%", "up"]);
    assert_code(&out, 0);
    assert_contains(&out.stdout, &["2 tenant(s)"]);
    assert!(migrated(&db, "tn_a") && migrated(&db, "tn_b"));
    assert!(!has_history(&db, "other"));
    // '%' matches everything, but never public, information_schema or pg_*.
    let out = mt(&db, &["--schema-pattern", "%", "--format", "json", "status"]);
    assert_code(&out, 0);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let names: Vec<&str> = report["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["schema"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["other", "tn_a", "tn_b"]);
}

#[test]
fn exactly_one_source() {
    let db = TestDb::new();
    let none = mt(&db, &["up"]);
    assert_code(&none, 2);
    assert_contains(&none.stderr, &["no tenants"]);
    let two = mt(&db, &["--tenants", "a", "--schema-pattern", "t%", "up"]);
    assert_code(&two, 2);
    assert_contains(
        &two.stderr,
        &["several tenant sources", "--tenants", "--schema-pattern"],
    );
}

#[test]
fn selection_only_exclude_dedup_and_order() {
    let db = TestDb::new();
    create_schemas(&db, &["sa", "sb", "sc", "sd"]);
    let out = mt(
        &db,
        &[
            "--tenants",
            "sd,sb,sa,sb,sc",
            "--exclude",
            "sc",
            "--tenant",
            "sd",
            "--tenant",
            "sb",
            "up",
        ],
    );
    assert_code(&out, 0);
    assert_contains(&out.stdout, &["2 tenant(s)"]);
    assert!(migrated(&db, "sb") && migrated(&db, "sd"));
    assert!(!has_history(&db, "sa") && !has_history(&db, "sc"));
    let status = mt(&db, &["--tenants", "sd,sb,sa,sb,sc", "status"]);
    let order: Vec<&str> = status
        .stdout
        .lines()
        .filter_map(|l| l.split(':').next())
        .filter(|n| n.starts_with('s') && n.len() == 2)
        .collect();
    assert_eq!(
        order,
        ["sa", "sb", "sc", "sd"],
        "sorted and de-duplicated:\n{}",
        status.stdout
    );
}

#[test]
fn tenant_create_is_atomic() {
    let db = TestDb::new();
    let dir = MigDir::new();
    dir.add("2024-01-01-000001_a", "CREATE TABLE a (id int);", Some("DROP TABLE a;"))
        .add("2024-01-01-000002_b", "CREATE TABLE b (id int);", Some("DROP TABLE b;"))
        .add(
            "2024-01-01-000003_c",
            "CREATE TABLE c (id int); SELECT 1/0;",
            Some("DROP TABLE c;"),
        );
    let out = mt_dir(&db, &dir, &["tenant", "create", "doomed"]);
    assert_code(&out, 1);
    assert_contains(
        &all_output(&out),
        &["doomed", "2024-01-01-000003_c", "division by zero", "not created"],
    );
    assert!(
        !schema_exists(&db, "doomed"),
        "a failed tenant create must leave no schema"
    );

    let ok = mt(&db, &["tenant", "create", "fresh1", "fresh2"]);
    assert_code(&ok, 0);
    assert_contains(
        &ok.stdout,
        &["fresh1: created at 2024-01-01-000005_add_users_last_login_at (5 applied"],
    );
    assert!(migrated(&db, "fresh1") && migrated(&db, "fresh2"));

    let again = mt(&db, &["tenant", "create", "fresh1"]);
    assert_code(&again, 1);
    assert_contains(&again.stdout, &["already exists", "--if-not-exists"]);
    assert_code(&mt(&db, &["tenant", "create", "fresh1", "--if-not-exists"]), 0);
    assert!(migrated(&db, "fresh1"));
}

#[test]
fn tenant_create_with_a_non_transactional_migration_cleans_up() {
    let db = TestDb::new();
    let dir = MigDir::new();
    dir.add("2024-01-01-000001_a", "CREATE TABLE a (id int);", Some("DROP TABLE a;"))
        .add(
            "2024-01-01-000002_idx",
            "CREATE INDEX CONCURRENTLY a_id ON a (id);",
            Some("DROP INDEX a_id;"),
        )
        .file("2024-01-01-000002_idx/metadata.toml", "run_in_transaction = false\n")
        .add("2024-01-01-000003_bad", "SELECT * FROM missing_table;", None);
    let out = mt_dir(&db, &dir, &["tenant", "create", "half"]);
    assert_code(&out, 1);
    assert_contains(&all_output(&out), &["missing_table", "dropped again"]);
    assert!(!schema_exists(&db, "half"));
}

#[test]
fn tenant_create_refuses_bad_names_before_connecting() {
    let db = TestDb::new();
    let before = snapshot(&db);
    for name in ["public", "pg_x", "Upper", "x\"; DROP SCHEMA public; --"] {
        let out = mt(&db, &["tenant", "create", name]);
        assert_code(&out, 2);
    }
    assert_eq!(snapshot(&db), before);
}

#[test]
fn tenant_drop_refusals_and_drop() {
    let db = TestDb::new();
    assert_code(&mt(&db, &["tenant", "create", "victim"]), 0);
    create_schemas(&db, &["plain"]);

    let no_yes = mt(&db, &["tenant", "drop", "victim"]);
    assert_code(&no_yes, 2);
    assert_contains(&no_yes.stderr, &["--yes"]);
    assert!(schema_exists(&db, "victim"));

    for reserved in ["public", "information_schema", "pg_catalog"] {
        assert_code(&mt(&db, &["tenant", "drop", reserved, "--yes", "--force"]), 2);
    }
    assert!(schema_exists(&db, "public"));

    let not_tenant = mt(&db, &["tenant", "drop", "plain", "--yes"]);
    assert_code(&not_tenant, 1);
    assert_contains(&not_tenant.stdout, &["not a tenant", "--force"]);
    assert!(schema_exists(&db, "plain"));
    assert_code(&mt(&db, &["tenant", "drop", "plain", "--yes", "--force"]), 0);
    assert!(!schema_exists(&db, "plain"));

    let dropped = mt(&db, &["tenant", "drop", "victim", "--yes"]);
    assert_code(&dropped, 0);
    assert_contains(
        &dropped.stdout,
        &["victim: dropped (was at 2024-01-01-000005_add_users_last_login_at"],
    );
    assert!(!schema_exists(&db, "victim"));

    let gone = mt(&db, &["tenant", "drop", "victim", "--yes"]);
    assert_code(&gone, 1);
    assert_contains(&gone.stdout, &["does not exist", "--if-exists"]);
    let skipped = mt(&db, &["tenant", "drop", "victim", "--yes", "--if-exists"]);
    assert_code(&skipped, 0);
    assert_contains(
        &skipped.stdout,
        &["victim: skipped: schema does not exist", "1 skipped"],
    );
}

#[test]
fn tenant_list_shows_version_and_pending() {
    let db = TestDb::new();
    create_schemas(&db, &["la", "lb"]);
    assert_code(&mt(&db, &["--tenants", "la", "up"]), 0);
    assert_code(&mt(&db, &["--tenants", "lb", "up", "--to", "20240101000002"]), 0);
    let out = mt(&db, &["--schema-pattern", "l%", "tenant", "list"]);
    assert_code(&out, 0);
    assert_contains(
        &out.stdout,
        &[
            "la: 2024-01-01-000005_add_users_last_login_at (5 applied, 0 pending)",
            "lb: 2024-01-01-000002_create_users (2 applied, 3 pending)",
        ],
    );
    let json = mt(&db, &["--schema-pattern", "l%", "--format", "json", "tenant", "list"]);
    let report: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(report["tenants"][1]["pending_count"], 3);
    assert_eq!(report["tenants"][1]["version_after"], "20240101000002");
}

#[test]
fn tenant_selection_must_name_discovered_tenants() {
    let db = TestDb::new();
    create_schemas(&db, &["pa", "pb"]);
    let before = snapshot(&db);
    let out = mt(
        &db,
        &["--schema-pattern", "p%", "--tenant", "pa", "--tenant", "typo", "up"],
    );
    assert_code(&out, 2);
    assert_contains(
        &out.stderr,
        &["selected tenant(s) typo not among the discovered tenants"],
    );
    assert_eq!(snapshot(&db), before);
}

#[test]
fn tenants_query_must_return_one_column() {
    let db = TestDb::new();
    let out = mt(&db, &["--tenants-query", "SELECT 'a'::text, 'b'::text", "up"]);
    assert_code(&out, 2);
    assert_contains(&out.stderr, &["returns 2 columns, not one"]);
}

#[test]
fn flags_win_over_tenant_sources_in_the_environment() {
    let db = TestDb::new();
    create_schemas(&db, &["ea", "eb"]);
    let mut cmd = cmd(&db, &["--schema-pattern", "eb", "up"]);
    cmd.env("TENANTS", "ea");
    let out = support::run(&mut cmd);
    assert_code(&out, 0);
    assert!(migrated(&db, "eb") && !has_history(&db, "ea"));
    let mut both_env = cmd_env(&db);
    both_env.env("TENANTS", "ea").env("TENANT_SCHEMA_PATTERN", "e%");
    let out = support::run(&mut both_env);
    assert_code(&out, 2);
    assert_contains(
        &out.stderr,
        &["several tenant sources", "TENANTS", "TENANT_SCHEMA_PATTERN"],
    );
}

fn cmd_env(db: &TestDb) -> std::process::Command {
    cmd(db, &["status"])
}

#[test]
fn a_tenant_the_role_cannot_read_fails_alone() {
    let db = TestDb::new();
    create_schemas(&db, &["mine", "secret"]);
    db.exec(
        "DO $$ BEGIN CREATE ROLE mt_app LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$; GRANT CREATE ON DATABASE \"{db}\" TO mt_app; \
         ALTER SCHEMA mine OWNER TO mt_app; \
         CREATE TABLE secret.__diesel_schema_migrations (version varchar(50) PRIMARY KEY, run_on timestamp NOT NULL DEFAULT now());"
            .replace("{db}", &db.name)
            .as_str(),
    );
    let app_url = db.url.replacen("postgres@", "mt_app@", 1);
    let mut cmd = support::cli();
    cmd.args(["--database-url", &app_url, "--tenants", "mine,secret", "up"]);
    let out = support::run(&mut cmd);
    assert_code(&out, 1);
    assert_contains(&out.stdout, &["secret: FAILED", "permission denied"]);
    assert!(
        migrated(&db, "mine"),
        "a tenant the role can read must still be migrated"
    );
    db.exec("DROP OWNED BY mt_app; DROP ROLE mt_app;");
}

#[test]
fn tenant_create_handles_enum_values_added_by_an_earlier_migration() {
    let db = TestDb::new();
    let dir = MigDir::new();
    dir.add(
        "2024-01-01-000001_type",
        "CREATE TYPE st AS ENUM ('a'); CREATE TABLE t (s st);",
        Some("DROP TABLE t; DROP TYPE st;"),
    )
    .add("2024-01-01-000002_value", "ALTER TYPE st ADD VALUE 'b';", Some(""))
    .add(
        "2024-01-01-000003_use",
        "INSERT INTO t VALUES ('b');",
        Some("DELETE FROM t;"),
    );
    let out = mt_dir(&db, &dir, &["tenant", "create", "enumy"]);
    assert_code(&out, 0);
    assert_eq!(history(&db, "enumy").len(), 3);
    assert_eq!(db.query("SELECT s FROM enumy.t"), "b");
}

#[test]
fn lifecycle_commands_refuse_tenant_source_flags() {
    let db = TestDb::new();
    let out = mt(&db, &["--tenants", "acme", "tenant", "create", "zeta"]);
    assert_code(&out, 2);
    assert_contains(&out.stderr, &["take the tenant names as arguments"]);
    assert!(!schema_exists(&db, "zeta"));
}

#[test]
fn status_reports_a_missing_schema_as_skipped_under_missing_create() {
    let db = TestDb::new();
    let out = mt(&db, &["--tenants", "gone", "--missing", "create", "status"]);
    assert_code(&out, 0);
    assert_contains(
        &out.stdout,
        &["gone: skipped: schema does not exist (only up and redo create missing schemas)"],
    );
    assert!(!schema_exists(&db, "gone"), "status never creates anything");
    let out = mt(&db, &["--tenants", "gone", "status"]);
    assert_code(&out, 1);
}

#[test]
fn tenants_query_may_end_with_a_semicolon_and_a_comment() {
    let db = TestDb::new();
    create_schemas(&db, &["qc1"]);
    let out = mt(&db, &["--tenants-query", "SELECT 'qc1'; -- the active ones", "up"]);
    assert_code(&out, 0);
    assert!(migrated(&db, "qc1"));
    let two = mt(&db, &["--tenants-query", "SELECT 'qc1'; SELECT 'qc2'", "up"]);
    assert_code(&two, 2);
    assert_contains(&two.stderr, &["2 statements, not one SELECT"]);
}

#[test]
fn all_tenants_finds_every_schema_with_a_history_table_but_the_shared_one() {
    let db = TestDb::new();
    create_schemas(&db, &["hist_a", "hist_b", "plain_c", "registry_home"]);
    assert_code(&mt(&db, &["--tenants", "hist_a,hist_b", "up", "--to", BASIC[1]]), 0);
    db.exec("CREATE TABLE registry_home.__diesel_schema_migrations (version VARCHAR(50) PRIMARY KEY NOT NULL, run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)");
    let out = mt(&db, &["--all-tenants", "--shared-schema", "registry_home", "status"]);
    assert_code(&out, 0);
    assert_contains(&out.stdout, &["2 tenant(s)", "hist_a: ", "hist_b: "]);
    assert!(
        !out.stdout.contains("plain_c") && !all_output(&out).contains("registry_home:"),
        "{}",
        all_output(&out)
    );
    assert!(!out.stderr.contains("invalid"), "{}", out.stderr);
    let up = mt(&db, &["--all-tenants", "up"]);
    assert_code(&up, 0);
    assert_eq!(history(&db, "hist_b"), versions(&BASIC));
    assert!(history(&db, "plain_c").is_empty());
}

#[test]
fn shards_split_the_tenants_into_stable_disjoint_parts() {
    let db = TestDb::new();
    let names: Vec<String> = (1..=30).map(|i| format!("sh{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    create_schemas(&db, &refs);
    let mut seen: Vec<String> = Vec::new();
    for part in 1..=3 {
        let shard = format!("{part}/3");
        let out = mt(
            &db,
            &[
                "--tenants",
                &names.join(","),
                "--shard",
                &shard,
                "--format",
                "json",
                "up",
            ],
        );
        assert_code(&out, 0);
        let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let mine: Vec<String> = doc["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["schema"].as_str().unwrap().to_string())
            .collect();
        assert!(!mine.is_empty() && mine.len() < 30, "part {part}: {mine:?}");
        assert!(mine.iter().all(|t| !seen.contains(t)), "parts overlap");
        // The same part again: the same tenants (now up to date).
        let again = mt(&db, &["--tenants", &names.join(","), "--shard", &shard, "status"]);
        assert_contains(&again.stdout, &[&format!("{} tenant(s)", mine.len())]);
        seen.extend(mine);
    }
    seen.sort();
    let mut all = names.clone();
    all.sort();
    assert_eq!(seen, all, "the parts cover every tenant");
    assert_code(&mt(&db, &["--tenants", "sh1", "--shard", "4/3", "status"]), 2);
}

#[test]
fn status_check_is_a_deploy_gate_with_distinct_exit_codes() {
    let db = TestDb::new();
    create_schemas(&db, &["gate_a", "gate_b"]);
    assert_code(&mt(&db, &["--tenants", "gate_a,gate_b", "up"]), 0);
    assert_code(&mt(&db, &["--tenants", "gate_a,gate_b", "status", "--check"]), 0);
    assert_code(&mt(&db, &["--tenants", "gate_b", "down"]), 0);
    assert_code(&mt(&db, &["--tenants", "gate_a,gate_b", "status", "--check"]), 4);
    assert_code(&mt(&db, &["--tenants", "gate_a,gate_b", "status"]), 0);
    db.exec("INSERT INTO gate_a.__diesel_schema_migrations (version) VALUES ('20991231000000')");
    assert_code(&mt(&db, &["--tenants", "gate_a,gate_b", "status", "--check"]), 5);
    assert_code(
        &mt(&db, &["--tenants", "gate_a,gate_b,gate_missing", "status", "--check"]),
        1,
    );
    // -v: the runner's log lines on stderr.
    let verbose = mt(&db, &["--tenants", "gate_a", "-v", "status"]);
    assert_contains(&verbose.stderr, &["catalog pass"]);
}
