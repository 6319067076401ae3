//! The run journal: what each run did, resuming a run, rolling back exactly one run (also
//! with a set that lacks its migrations), and the `down --steps` hazard.

use crate::helpers::*;
use crate::support::{self, TestDb};
use std::time::{Duration, Instant};

const FIRST: &str = "2024-01-01-000001_first";
const SECOND: &str = "2024-01-01-000002_second";
const THIRD: &str = "2024-01-01-000003_third";
const FOURTH: &str = "2024-01-02-000004_fourth";
const FIFTH: &str = "2024-01-02-000005_fifth";

/// The second migration fails in schemas whose name starts with `bad` (while `fail` says so).
fn first_release(fail: bool) -> MigDir {
    let dir = MigDir::new();
    let boom = if fail {
        "DO $$ BEGIN IF current_schema() LIKE 'bad%' THEN RAISE EXCEPTION 'boom'; END IF; END $$;\n"
    } else {
        ""
    };
    dir.add(FIRST, "CREATE TABLE m1 (id int);", Some("DROP TABLE m1;"))
        .add(
            SECOND,
            &format!("CREATE TABLE m2 (id int);\n{boom}"),
            Some("DROP TABLE m2;"),
        )
        .add(THIRD, "CREATE TABLE m3 (id int);", Some("DROP TABLE m3;"));
    dir
}

/// The first release plus two migrations.
fn second_release() -> MigDir {
    let dir = first_release(false);
    dir.add(FOURTH, "CREATE TABLE m4 (id int);", Some("DROP TABLE m4;"))
        .add(
            FIFTH,
            "ALTER TABLE m4 ADD COLUMN note text;",
            Some("ALTER TABLE m4 DROP COLUMN note;"),
        );
    dir
}

fn twelve() -> Vec<String> {
    let mut names: Vec<String> = (1..=9).map(|i| format!("good{i}")).collect();
    names.extend((1..=3).map(|i| format!("bad{i}")));
    names
}

fn q(db: &TestDb, sql: &str) -> Vec<String> {
    rows(&db.query(sql))
}

fn latest_run(db: &TestDb) -> String {
    db.query("SELECT max(id) FROM migrate_tenants.runs")
}

#[test]
fn a_deploy_is_journaled_and_only_failed_finishes_it() {
    let db = TestDb::new();
    let names = twelve();
    create_schemas(&db, &names.iter().map(String::as_str).collect::<Vec<_>>());
    let list = names.join(",");
    let out = mt_dir(&db, &first_release(true), &["--tenants", &list, "up"]);
    assert_code(&out, 1);
    let run = latest_run(&db);
    assert_contains(&out.stdout, &[&format!("up --resume {run}")]);

    // One row for the run, closed as failed, with its arguments and counts.
    let row = db.query(&format!(
        "SELECT command || '|' || outcome || '|' || changed || '|' || failed || '|' || (finished_at IS NOT NULL) \
         FROM migrate_tenants.runs WHERE id = {run}"
    ));
    assert_eq!(row, "up|failed|9|3|true");
    assert!(db
        .query(&format!("SELECT arguments FROM migrate_tenants.runs WHERE id = {run}"))
        .contains("--tenants"));
    // One row per tenant with its outcome; the failures keep their reason.
    let outcomes = q(
        &db,
        &format!(
            "SELECT tenant || ':' || outcome FROM migrate_tenants.run_tenants WHERE run_id = {run} ORDER BY tenant"
        ),
    );
    assert_eq!(outcomes.len(), 12);
    assert!(
        outcomes.iter().filter(|o| o.ends_with(":changed")).count() == 9,
        "{outcomes:?}"
    );
    for bad in ["bad1", "bad2", "bad3"] {
        assert!(outcomes.contains(&format!("{bad}:failed")), "{outcomes:?}");
        let error = db.query(&format!(
            "SELECT error FROM migrate_tenants.run_tenants WHERE run_id = {run} AND tenant = '{bad}'"
        ));
        assert_contains(&error, &["boom"]);
    }
    // One row per step: versions, names, checksums of up.sql, the text of down.sql.
    let steps = q(
        &db,
        &format!(
            "SELECT version || ' ' || name || ' ' || direction || ' ' || status FROM migrate_tenants.steps \
         WHERE run_id = {run} AND tenant = 'good1' ORDER BY id"
        ),
    );
    assert_eq!(
        steps,
        [
            format!("20240101000001 {FIRST} up done"),
            format!("20240101000002 {SECOND} up done"),
            format!("20240101000003 {THIRD} up done"),
        ]
    );
    let kept = db.query(&format!(
        "SELECT up_checksum || '|' || down_sql FROM migrate_tenants.steps WHERE run_id = {run} \
         AND tenant = 'good1' AND version = '20240101000001'"
    ));
    assert_eq!(
        kept,
        format!(
            "{}|DROP TABLE m1;",
            migrate_tenants::checksum("CREATE TABLE m1 (id int);")
        )
    );
    let failed = q(
        &db,
        &format!(
            "SELECT name || ' ' || status || ' ' || (coalesce(error, '') LIKE '%boom%') FROM migrate_tenants.steps \
         WHERE run_id = {run} AND tenant = 'bad1' ORDER BY id"
        ),
    );
    assert_eq!(failed, [format!("{FIRST} done false"), format!("{SECOND} failed true")]);

    // The deploy gate fails and names them.
    let status = mt_dir(&db, &first_release(true), &["--tenants", &list, "status", "--check"]);
    assert_ne!(status.code, 0);
    assert_contains(&status.stdout, &["bad1", "bad2", "bad3"]);

    // The fix ships; --only-failed runs those three only.
    let out = mt_dir(&db, &first_release(false), &["up", "--only-failed"]);
    assert_code(&out, 0);
    assert_contains(&out.stdout, &["3 tenant(s): 3 changed"]);
    let resumed = latest_run(&db);
    let touched = q(
        &db,
        &format!("SELECT tenant FROM migrate_tenants.run_tenants WHERE run_id = {resumed} ORDER BY tenant"),
    );
    assert_eq!(touched, ["bad1", "bad2", "bad3"]);
    for bad in ["bad1", "bad2", "bad3"] {
        assert_eq!(
            history(&db, bad),
            ["20240101000001", "20240101000002", "20240101000003"]
        );
    }
    // Nothing is left to resume in the resuming run.
    let out = mt_dir(&db, &first_release(false), &["up", "--only-failed"]);
    assert_code(&out, 0);
    assert_contains(&out.stdout, &["0 tenant(s)"]);
}

/// Tenants at different versions; a second deploy; `down --run` takes each back to where that
/// deploy found it.
fn two_deploys(db: &TestDb) -> String {
    create_schemas(db, &["a", "b", "c"]);
    assert_code(&mt_dir(db, &first_release(false), &["--tenants", "a,b,c", "up"]), 0);
    // c is one migration behind before the second deploy.
    assert_code(
        &mt_dir(db, &first_release(false), &["--tenants", "c", "down", "--steps", "1"]),
        0,
    );
    assert_code(&mt_dir(db, &second_release(), &["--tenants", "a,b,c", "up"]), 0);
    latest_run(db)
}

#[test]
fn down_run_reverts_exactly_one_deploy_whatever_the_versions_before() {
    let db = TestDb::new();
    let deploy = two_deploys(&db);
    let out = mt_dir(&db, &second_release(), &["down", "--run", &deploy, "--yes"]);
    assert_code(&out, 0);
    for t in ["a", "b"] {
        assert_eq!(
            history(&db, t),
            ["20240101000001", "20240101000002", "20240101000003"],
            "{t}"
        );
        assert_eq!(tables_in(&db, t), ["__diesel_schema_migrations", "m1", "m2", "m3"]);
    }
    // c was at the second migration: the deploy applied the third too, and that is undone.
    assert_eq!(history(&db, "c"), ["20240101000001", "20240101000002"]);
    assert_eq!(tables_in(&db, "c"), ["__diesel_schema_migrations", "m1", "m2"]);

    // Again: nothing more is reverted.
    let before = snapshot(&db);
    let out = mt_dir(&db, &second_release(), &["down", "--run", &deploy, "--yes"]);
    assert_code(&out, 0);
    assert_contains(&out.stdout, &["0 changed, 3 unchanged"]);
    assert_eq!(snapshot(&db), before);
}

#[test]
fn down_run_works_with_the_previous_release_from_the_journal() {
    let db = TestDb::new();
    let deploy = two_deploys(&db);
    // The binary redeployed during the incident does not ship the fourth and fifth migrations.
    let out = mt_dir(&db, &first_release(false), &["down", "--run", &deploy, "--yes"]);
    assert_code(&out, 0);
    for t in ["a", "b"] {
        assert_eq!(
            history(&db, t),
            ["20240101000001", "20240101000002", "20240101000003"],
            "{t}"
        );
        assert_eq!(tables_in(&db, t), ["__diesel_schema_migrations", "m1", "m2", "m3"]);
    }
    assert_eq!(history(&db, "c"), ["20240101000001", "20240101000002"]);
}

#[test]
fn an_interrupted_rollback_run_again_never_reverts_more() {
    let db = TestDb::new();
    let deploy = two_deploys(&db);
    // The first rollback stops after one tenant (here: only a was reached).
    assert_code(
        &mt_dir(
            &db,
            &second_release(),
            &["down", "--run", &deploy, "--tenant", "a", "--yes"],
        ),
        0,
    );
    assert_eq!(
        history(&db, "a"),
        ["20240101000001", "20240101000002", "20240101000003"]
    );
    assert_eq!(history(&db, "b").len(), 5);
    // Run again for all: a is left alone, b and c are finished.
    let out = mt_dir(&db, &second_release(), &["down", "--run", &deploy, "--yes"]);
    assert_code(&out, 0);
    assert_eq!(
        history(&db, "a"),
        ["20240101000001", "20240101000002", "20240101000003"]
    );
    assert_eq!(
        history(&db, "b"),
        ["20240101000001", "20240101000002", "20240101000003"]
    );
    assert_eq!(history(&db, "c"), ["20240101000001", "20240101000002"]);
}

#[test]
fn down_run_refuses_under_a_later_run_unless_forced() {
    let db = TestDb::new();
    create_schemas(&db, &["a"]);
    let first = first_release(false);
    assert_code(
        &mt_dir(&db, &first, &["--tenants", "a", "up", "--to", "20240101000002"]),
        0,
    );
    let early = latest_run(&db);
    assert_code(&mt_dir(&db, &first, &["--tenants", "a", "up"]), 0);
    let before = snapshot(&db);
    let out = mt_dir(&db, &first, &["down", "--run", &early, "--yes"]);
    assert_code(&out, 2);
    assert_contains(&all_output(&out), &["nothing was changed", "a: ", THIRD, "--force"]);
    assert_eq!(snapshot(&db), before);
    // Forced, it reverts exactly the early run's migrations (the third one stays).
    let out = mt_dir(&db, &first, &["down", "--run", &early, "--force", "--yes"]);
    assert_code(&out, 0);
    assert_eq!(history(&db, "a"), ["20240101000003"]);
    // A run that does not exist is named.
    let out = mt_dir(&db, &first, &["down", "--run", "9999", "--yes"]);
    assert_code(&out, 2);
    assert_contains(&all_output(&out), &["no run 9999", "`runs`"]);
}

#[test]
fn down_steps_over_tenants_at_different_versions_is_refused_unless_confirmed() {
    let db = TestDb::new();
    create_schemas(&db, &["a", "b"]);
    let set = first_release(false);
    assert_code(&mt_dir(&db, &set, &["--tenants", "a,b", "up"]), 0);
    assert_code(&mt_dir(&db, &set, &["--tenants", "b", "down"]), 0);
    let before = snapshot(&db);
    let out = mt_dir(&db, &set, &["--tenants", "a,b", "down", "--steps", "1"]);
    assert_code(&out, 2);
    assert_contains(
        &all_output(&out),
        &["different versions", THIRD, SECOND, "--to", "--run", "--yes"],
    );
    assert_eq!(snapshot(&db), before);
    let out = mt_dir(&db, &set, &["--tenants", "a,b", "down", "--steps", "1", "--yes"]);
    assert_code(&out, 0);
    assert_eq!(history(&db, "a"), ["20240101000001", "20240101000002"]);
    assert_eq!(history(&db, "b"), ["20240101000001"]);
}

#[test]
fn a_killed_run_shows_how_far_it_got_and_resume_finishes_it() {
    let db = TestDb::new();
    let names = ["t1", "t2", "t3", "t4"];
    create_schemas(&db, &names);
    let dir = MigDir::new();
    dir.add(FIRST, "CREATE TABLE m1 (id int);", Some("DROP TABLE m1;")).add(
        SECOND,
        "DO $$ BEGIN IF current_schema() = 't3' THEN PERFORM pg_sleep(60); END IF; END $$;\nCREATE TABLE m2 (id int);",
        Some("DROP TABLE m2;"),
    );
    let mut cmd = cmd(&db, &["--tenants", "t1,t2,t3,t4", "--concurrency", "1", "up"]);
    cmd.arg("--migrations-dir").arg(dir.path());
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    support::wait_until(
        &db.url,
        "SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND datname = current_database() AND pid <> pg_backend_pid()",
        Duration::from_secs(30),
    );
    let _ = child.kill(); // SIGKILL: nothing is written after this
    let _ = child.wait();
    // A backend busy in pg_sleep notices its lost client only when it next writes to it: end
    // it, as the server would (t3's transaction rolls back).
    let sleeping = "FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND datname = current_database() AND pid <> pg_backend_pid()";
    db.query(&format!("SELECT count(pg_terminate_backend(pid)) {sleeping}"));
    let started = Instant::now();
    while db.query(&format!("SELECT count(*) {sleeping}")) != "0" {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the killed run's backend lingers"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let run = latest_run(&db);
    assert_eq!(
        db.query(&format!(
            "SELECT finished_at IS NULL FROM migrate_tenants.runs WHERE id = {run}"
        )),
        "t"
    );
    let done = q(
        &db,
        &format!(
            "SELECT DISTINCT tenant FROM migrate_tenants.steps WHERE run_id = {run} AND version = '20240101000002' \
         AND status = 'done' ORDER BY tenant"
        ),
    );
    assert_eq!(done, ["t1", "t2"], "the journal shows exactly the tenants done");
    let shown = mt_dir(&db, &dir, &["runs", "show", &run]);
    assert_code(&shown, 0);
    assert_contains(&shown.stdout, &["not finished", "t1", "t2"]);

    // Resume (the latest up run): t3 and t4 were never finished. t1 and t2 may be offered
    // again (outcomes are written once a second; the killed run had no time) but have nothing
    // left to do.
    let fixed = MigDir::new();
    fixed
        .add(FIRST, "CREATE TABLE m1 (id int);", Some("DROP TABLE m1;"))
        .add(SECOND, "CREATE TABLE m2 (id int);", Some("DROP TABLE m2;"));
    let out = mt_dir(&db, &fixed, &["up", "--resume"]);
    assert_code(&out, 0);
    assert_contains(
        &out.stdout,
        &[
            "t3: 2024-01-01-000001_first -> 2024-01-01-000002_second",
            "t4: none -> 2024-01-01-000002_second",
        ],
    );
    assert!(
        !out.stdout.contains("t1: 2024-01-01-000001_first ->")
            && !out.stdout.contains("t2: 2024-01-01-000001_first ->"),
        "{}",
        out.stdout
    );
    for t in names {
        assert_eq!(history(&db, t), ["20240101000001", "20240101000002"], "{t}");
    }
}

#[test]
fn runs_lists_and_shows_runs_in_json_without_the_password() {
    let db = TestDb::new();
    create_schemas(&db, &["a"]);
    let url = db.url_with_password("s3cr3t-pw");
    let mut cmd = support::cli();
    cmd.args(["--database-url", &url, "--tenants", "a", "up"]);
    assert_code(&support::run(&mut cmd), 0);
    let out = mt(&db, &["runs", "--format", "json"]);
    assert_code(&out, 0);
    let runs: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    let run = &runs[0];
    assert_eq!(run["command"], "up");
    assert_eq!(run["ok"], 1);
    assert!(!out.stdout.contains("s3cr3t-pw"), "{}", out.stdout);
    let id = run["id"].as_i64().expect("id").to_string();
    let out = mt(&db, &["runs", "show", &id, "--format", "json"]);
    assert_code(&out, 0);
    let detail: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(detail["tenants"][0]["tenant"], "a");
    assert_eq!(detail["tenants"][0]["outcome"], "changed");
    assert_eq!(detail["steps"].as_array().expect("steps").len(), 5);
    assert!(!db
        .query("SELECT string_agg(arguments, ' ') FROM migrate_tenants.runs")
        .contains("s3cr3t-pw"));
}

#[test]
fn no_journal_writes_nothing_and_another_schema_can_hold_it() {
    let db = TestDb::new();
    create_schemas(&db, &["a", "b"]);
    assert_code(&mt(&db, &["--tenants", "a", "--no-journal", "up"]), 0);
    assert_eq!(
        db.query("SELECT count(*) FROM pg_namespace WHERE nspname = 'migrate_tenants'"),
        "0"
    );
    assert_code(
        &mt(&db, &["--tenants", "b", "--journal-schema", "ops_journal", "up"]),
        0,
    );
    assert_eq!(
        db.query("SELECT count(*) FROM ops_journal.steps WHERE tenant = 'b'"),
        "5"
    );
    // The journal's schema is never taken for a tenant.
    let out = mt(
        &db,
        &["--schema-pattern", "%", "--journal-schema", "ops_journal", "status"],
    );
    assert!(!out.stdout.contains("ops_journal"), "{}", out.stdout);
}

#[test]
fn the_library_reads_the_journal_typed() {
    let db = TestDb::new();
    create_schemas(&db, &["a"]);
    let set = migrate_tenants::MigrationSet::from_dir(std::path::Path::new(BASIC_SET)).expect("set");
    let runner = migrate_tenants::Runner::new(set)
        .database_url(&db.url)
        .tenants(migrate_tenants::TenantSource::list(["a"]));
    let report = runner.up().expect("up");
    let id = report.run_id.expect("a journaled run");
    let runs = runner.runs(10).expect("runs");
    assert_eq!(runs[0].id, id);
    let detail = runner.run_detail(id).expect("detail");
    assert_eq!(detail.steps.len(), 5);
    let rolled_back = runner
        .run(&migrate_tenants::Task::Rollback { run: id, force: false }, &mut ())
        .expect("rollback");
    assert_eq!(rolled_back.summary.reverted, 5);
    assert!(history(&db, "a").is_empty());
}

#[test]
fn status_opens_with_the_fleet_and_flags_edited_migrations() {
    let db = TestDb::new();
    create_schemas(&db, &["a", "b", "c"]);
    let set = first_release(false);
    assert_code(&mt_dir(&db, &set, &["--tenants", "a,b,c", "up"]), 0);
    assert_code(&mt_dir(&db, &set, &["--tenants", "c", "down"]), 0);
    let out = mt_dir(&db, &set, &["--tenants", "a,b,c", "status", "--behind-only"]);
    assert_code(&out, 0);
    assert_contains(
        &out.stdout,
        &[
            &format!("versions: {THIRD}: 2 tenant(s) · {SECOND}: 1 tenant(s)"),
            "fleet: 3 tenant(s): 2 up to date, 1 behind",
            "0 failed in the last up run",
            "c: 2024-01-01-000002_second (2 applied, 1 pending)",
        ],
    );
    assert!(
        !out.stdout.contains("a: "),
        "--behind-only hides current tenants: {}",
        out.stdout
    );
    // JSON lists the pending versions per tenant, and the histogram.
    let out = mt_dir(&db, &set, &["--tenants", "a,b,c", "status", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(doc["tenants"][2]["pending"], serde_json::json!(["20240101000003"]));
    assert_eq!(doc["versions"][0]["name"], THIRD);
    assert_eq!(doc["versions"][0]["tenants"], 2);

    // The first migration's up.sql is edited after it shipped: the gate says so (exit 6).
    assert_code(&mt_dir(&db, &set, &["--tenants", "c", "up"]), 0);
    set.add(FIRST, "CREATE TABLE m1 (id int, extra int);", Some("DROP TABLE m1;"));
    let out = mt_dir(&db, &set, &["--tenants", "a,b,c", "status", "--check"]);
    assert_code(&out, 6);
    assert_contains(
        &out.stdout,
        &[
            "3 with up.sql changed since applied",
            "up.sql changed since applied: 2024-01-01-000001_first",
        ],
    );
}

#[test]
fn mark_applied_and_pending_round_trip_and_refuse_contradictions() {
    let db = TestDb::new();
    create_schemas(&db, &["legacy"]);
    // A schema built by hand holds the first two migrations' tables.
    db.exec("CREATE TABLE legacy.m1 (id int); CREATE TABLE legacy.m2 (id int);");
    let set = first_release(false);
    let before = snapshot(&db);
    let out = mt_dir(&db, &set, &["--tenants", "legacy", "mark", "applied", "20240101000003"]);
    assert_code(&out, 1);
    assert_contains(&out.stdout, &["contradict", "m3", "does not exist"]);
    assert_eq!(snapshot(&db), before, "a refused mark changes nothing");
    for v in ["20240101000001", "2024-01-01-000002"] {
        assert_code(&mt_dir(&db, &set, &["--tenants", "legacy", "mark", "applied", v]), 0);
    }
    assert_eq!(history(&db, "legacy"), ["20240101000001", "20240101000002"]);
    // up now runs only the third.
    let out = mt_dir(&db, &set, &["--tenants", "legacy", "up"]);
    assert_code(&out, 0);
    assert_contains(
        &out.stdout,
        &["legacy: 2024-01-01-000002_second -> 2024-01-01-000003_third (1 applied"],
    );
    // Marking pending a migration whose table exists is refused, then forced.
    let out = mt_dir(&db, &set, &["--tenants", "legacy", "mark", "pending", "20240101000003"]);
    assert_code(&out, 1);
    assert_eq!(history(&db, "legacy").len(), 3);
    let out = mt_dir(
        &db,
        &set,
        &["--tenants", "legacy", "mark", "pending", "20240101000003", "--force"],
    );
    assert_code(&out, 0);
    assert_eq!(history(&db, "legacy"), ["20240101000001", "20240101000002"]);
    assert!(relation_exists(&db, "legacy", "m3"), "marking never runs SQL");
    // Journaled as marks.
    let marks = q(
        &db,
        "SELECT direction || ' ' || status FROM migrate_tenants.steps WHERE direction LIKE 'mark%' ORDER BY id",
    );
    assert_eq!(marks, ["mark applied done", "mark applied done", "mark pending done"]);
}

#[test]
fn down_run_leaves_the_shared_schema_alone() {
    let db = TestDb::new();
    create_schemas(&db, &["a", "b"]);
    let shared = MigDir::new();
    shared.add(
        "2024-01-01-000001_registry",
        "CREATE TABLE registry (id int);",
        Some("DROP TABLE registry;"),
    );
    let set = first_release(false);
    let mut up = cmd(&db, &["--tenants", "a,b", "up"]);
    up.arg("--migrations-dir")
        .arg(set.path())
        .arg("--shared-migrations-dir")
        .arg(shared.path());
    assert_code(&support::run(&mut up), 0);
    let run = latest_run(&db);
    assert_eq!(
        db.query(&format!(
            "SELECT count(*) FROM migrate_tenants.steps WHERE run_id = {run} AND scope = 'shared'"
        )),
        "1"
    );
    let mut down = cmd(&db, &["down", "--run", &run, "--yes"]);
    down.arg("--migrations-dir")
        .arg(set.path())
        .arg("--shared-migrations-dir")
        .arg(shared.path());
    let out = support::run(&mut down);
    assert_code(&out, 0);
    assert_contains(&out.stdout, &["2 tenant(s): 2 changed"]);
    for t in ["a", "b"] {
        assert!(history(&db, t).is_empty(), "{t}");
    }
    assert_eq!(history(&db, "public"), ["20240101000001"]);
    assert!(relation_exists(&db, "public", "registry"));
}

#[test]
fn a_redo_does_not_take_a_migration_from_the_run_that_applied_it() {
    let db = TestDb::new();
    create_schemas(&db, &["a"]);
    let set = first_release(false);
    assert_code(
        &mt_dir(&db, &set, &["--tenants", "a", "up", "--to", "20240101000002"]),
        0,
    );
    assert_code(&mt_dir(&db, &set, &["--tenants", "a", "up"]), 0);
    let deploy = latest_run(&db);
    assert_code(&mt_dir(&db, &set, &["--tenants", "a", "redo"]), 0);
    // Rolling the redo back leaves the third migration (it was there before the redo) ...
    let redo = latest_run(&db);
    let out = mt_dir(&db, &set, &["down", "--run", &redo, "--yes"]);
    assert_code(&out, 0);
    assert_contains(&out.stdout, &["0 changed, 1 unchanged"]);
    assert_eq!(history(&db, "a").len(), 3);
    // ... and the deploy that applied it can still be rolled back.
    assert_code(&mt_dir(&db, &set, &["down", "--run", &deploy, "--yes"]), 0);
    assert_eq!(history(&db, "a"), ["20240101000001", "20240101000002"]);
}

#[test]
fn resuming_only_the_failed_tenants_carries_the_unreached_ones_over() {
    let db = TestDb::new();
    let names = ["bad1", "t1", "t2", "t3"];
    create_schemas(&db, &names);
    // bad1 fails first and stops the run: t1..t3 are never reached.
    let out = mt_dir(
        &db,
        &first_release(true),
        &["--tenants", "bad1,t1,t2,t3", "--concurrency", "1", "--fail-fast", "up"],
    );
    assert_code(&out, 1);
    let first = latest_run(&db);
    // A mistyped resume is refused and does not become "the latest run".
    let out = mt_dir(
        &db,
        &first_release(false),
        &["up", "--only-failed", "--tenant", "nosuch"],
    );
    assert_code(&out, 2);
    // The fix ships: only the failed tenant first ...
    let out = mt_dir(&db, &first_release(false), &["up", "--only-failed"]);
    assert_code(&out, 0);
    assert_contains(&out.stdout, &["1 tenant(s): 1 changed"]);
    let second = latest_run(&db);
    let carried = q(
        &db,
        &format!(
            "SELECT tenant || ':' || outcome FROM migrate_tenants.run_tenants WHERE run_id = {second} ORDER BY tenant"
        ),
    );
    assert_eq!(carried, ["bad1:changed", "t1:skipped", "t2:skipped", "t3:skipped"]);
    // ... then the rest, resuming the latest run, which still knows them.
    let out = mt_dir(&db, &first_release(false), &["up", "--resume"]);
    assert_code(&out, 0);
    assert_contains(&out.stdout, &["3 tenant(s): 3 changed"]);
    for t in names {
        assert_eq!(history(&db, t).len(), 3, "{t}");
    }
    assert_ne!(first, second);
}

#[test]
fn a_resume_keeps_the_resumed_runs_target() {
    let db = TestDb::new();
    create_schemas(&db, &["bad1", "t1"]);
    let out = mt_dir(
        &db,
        &first_release(true),
        &["--tenants", "bad1,t1", "up", "--to", "20240101000002"],
    );
    assert_code(&out, 1);
    let out = mt_dir(&db, &first_release(false), &["up", "--resume"]);
    assert_code(&out, 2);
    assert_contains(&all_output(&out), &["20240101000002", "same target"]);
    let out = mt_dir(
        &db,
        &first_release(false),
        &["up", "--resume", "--to", "2024-01-01-000002"],
    );
    assert_code(&out, 0);
    assert_eq!(history(&db, "bad1"), ["20240101000001", "20240101000002"]);
}

#[test]
fn a_journal_keeps_down_sql_byte_for_byte_whatever_the_string_settings() {
    let db = TestDb::new();
    create_schemas(&db, &["a"]);
    db.exec(&format!(
        "ALTER DATABASE {} SET standard_conforming_strings = off",
        db.name
    ));
    let dir = MigDir::new();
    let down = "DROP TABLE m1; -- a backslash \\d and a quote ' stay";
    dir.add(FIRST, "CREATE TABLE m1 (id int);", Some(down));
    assert_code(&mt_dir(&db, &dir, &["--tenants", "a", "up"]), 0);
    assert_eq!(db.query("SELECT down_sql FROM migrate_tenants.steps"), down);
}

#[test]
fn a_role_that_cannot_create_the_journal_still_deploys_with_a_warning() {
    let db = TestDb::new();
    db.exec("DO $$ BEGIN CREATE ROLE mt_nojournal LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;");
    db.exec("CREATE SCHEMA owned AUTHORIZATION mt_nojournal");
    let url = db.url.replacen("postgres@", "mt_nojournal@", 1);
    let mut up = support::cli();
    up.args(["--database-url", &url, "--tenants", "owned", "up"]);
    let out = support::run(&mut up);
    assert_code(&out, 0);
    assert_contains(&out.stderr, &["warning:", "run journal", "not journaled"]);
    assert_eq!(history(&db, "owned").len(), 5);
    assert_eq!(
        db.query("SELECT count(*) FROM pg_namespace WHERE nspname = 'migrate_tenants'"),
        "0"
    );
}

#[test]
fn a_rollback_can_be_planned_first() {
    let db = TestDb::new();
    let deploy = two_deploys(&db);
    let before = snapshot(&db);
    let journal_before = db.query("SELECT count(*) FROM migrate_tenants.runs");
    let out = mt_dir(
        &db,
        &second_release(),
        &["down", "--run", &deploy, "--dry-run", "--format", "json"],
    );
    assert_code(&out, 0);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    let planned = |t: usize| -> Vec<String> {
        doc["tenants"][t]["plan"]["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .map(|s| s["migration"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(planned(0), [FIFTH, FOURTH], "a");
    assert_eq!(planned(2), [FIFTH, FOURTH, THIRD], "c");
    assert_eq!(snapshot(&db), before, "a dry run changes nothing");
    assert_eq!(
        db.query("SELECT count(*) FROM migrate_tenants.runs"),
        journal_before,
        "nor the journal"
    );
}
