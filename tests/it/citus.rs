//! Citus schema-based sharding, against a real 3-node Citus cluster (coordinator + 2 workers)
//! named by `CITUS_TEST_URL` (the coordinator's URL; `.ci/run` starts one with the kit in
//! `../shared/citus`). Those tests are `#[ignore]`d so that they are never counted as passed
//! without a cluster: run them with `cargo test --test tests citus -- --ignored`; without
//! `CITUS_TEST_URL` they fail. Every test uses tenants of its own in the cluster's database
//! and drops them at the end.
//!
//! The last tests run on the ordinary throwaway PostgreSQL: `--citus on` there sends every
//! migration statement by statement, with all the usual checks, and `--session-sql` is
//! applied after every session reset.

use crate::helpers::{assert_code, assert_contains, mt, mt_dir, MigDir};
use crate::support::{self, query_url, Out, TestDb};

/// The tests' Citus set: the basic fixture (a trigger function, triggers, indexes, an enum
/// value) plus a `CREATE INDEX CONCURRENTLY` and a trigger that writes a log table.
const CITUS_SET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/citus");
const CITUS_VERSIONS: usize = 7;
const TRIGGERS: &str = "SET citus.enable_unsafe_triggers = on";

/// The coordinator's URL; a test asked to run without one fails (it is never a silent pass).
fn coordinator() -> String {
    match std::env::var("CITUS_TEST_URL") {
        Ok(url) if !url.trim().is_empty() => url.trim().to_string(),
        _ => panic!("CITUS_TEST_URL is not set: these tests need a Citus cluster (see .ci/run)"),
    }
}

/// Tenant names unique to this test and process.
fn tenants(tag: &str, n: usize) -> Vec<String> {
    (1..=n)
        .map(|i| format!("ct_{tag}_{}_{i}", std::process::id()))
        .collect()
}

/// `migrate-tenants --database-url <coordinator> --migrations-dir <set> <args>`.
fn citus_mt(set: &str, args: &[&str]) -> Out {
    let mut cmd = support::cli();
    cmd.arg("--database-url")
        .arg(coordinator())
        .arg("--migrations-dir")
        .arg(set)
        .args(args);
    support::run(&mut cmd)
}

/// The same, with the session SQL the set's triggers need.
fn citus_up(set: &str, tenant_list: &str, args: &[&str]) -> Out {
    let mut all = vec!["--session-sql", TRIGGERS, "--tenants", tenant_list];
    all.extend_from_slice(args);
    citus_mt(set, &all)
}

fn query(sql: &str) -> String {
    query_url(&coordinator(), sql)
}

/// A SQL list of the names, quoted.
fn sql_list(names: &[String]) -> String {
    names.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ")
}

/// Drops the test's tenants (what a failed test left behind is wiped with the cluster).
fn drop_all(names: &[String]) {
    let mut args = vec!["tenant", "drop", "--if-exists", "--yes"];
    args.extend(names.iter().map(String::as_str));
    let out = citus_mt(CITUS_SET, &args);
    assert_code(&out, 0);
}

fn versions(schema: &str) -> usize {
    query(&format!("SELECT count(*) FROM \"{schema}\".__diesel_schema_migrations"))
        .parse()
        .expect("a count")
}

/// How many of `names` are on each worker node: `(nodes, schemas)` from `citus_shards`.
fn placement(names: &[String]) -> (usize, usize) {
    let row = query(&format!(
        "SELECT count(DISTINCT nodename || ':' || nodeport) || ' ' || count(DISTINCT table_name::text) \
         FROM citus_shards WHERE citus_table_type = 'schema' \
           AND table_name::text IN (SELECT format('%I.__diesel_schema_migrations', n) FROM unnest(ARRAY[{}]) n)",
        sql_list(names)
    ));
    let mut parts = row.split(' ').map(|p| p.parse::<usize>().expect("a count"));
    (parts.next().unwrap(), parts.next().unwrap())
}

/// Tables of `schema` whose name matches the regular expression `name`, counted on the
/// workers themselves (each worker has a shell of every table; the shard, `<table>_<id>`,
/// is on one worker).
fn tables_on_workers(schema: &str, name: &str) -> usize {
    let rows = query(&format!(
        "SELECT result FROM run_command_on_workers($$SELECT count(*) FROM pg_tables \
         WHERE schemaname = '{schema}' AND tablename ~ '{name}'$$)"
    ));
    rows.lines().map(|l| l.trim().parse::<usize>().expect("a count")).sum()
}

#[test]
#[ignore = "needs a Citus cluster: CITUS_TEST_URL"]
fn twenty_tenants_become_distributed_schemas_on_both_workers() {
    let names = tenants("dist", 20);
    let list = names.join(",");
    let mut args = vec!["--session-sql", TRIGGERS, "tenant", "create"];
    args.extend(names.iter().map(String::as_str));
    let out = citus_mt(CITUS_SET, &args);
    assert_code(&out, 0);
    assert_contains(&out.stdout, &["tenant create: 20 tenant(s): 20 changed"]);
    let distributed = query(&format!(
        "SELECT count(*) FROM citus_schemas WHERE schema_name::text IN ({})",
        sql_list(&names)
    ));
    assert_eq!(distributed, "20", "every tenant is a distributed schema");
    assert_eq!(placement(&names), (2, 20), "history tables on both workers");
    for name in &names {
        assert_eq!(versions(name), CITUS_VERSIONS);
    }
    // The history table and the set's tables belong to the tenant's distributed schema.
    let tables = query(&format!(
        "SELECT count(*) FROM citus_tables WHERE citus_table_type = 'schema' AND table_name::text LIKE '{}.%'",
        names[0]
    ));
    assert_eq!(tables, "5", "history, users, projects, tasks, task_log");
    // Triggers fire on the workers: updated_at, and the log written by a SET search_path
    // FROM CURRENT function.
    let t = &names[0];
    let fired = query(&format!(
        "INSERT INTO \"{t}\".users (email, name) VALUES ('a@example.com', 'A'); \
         INSERT INTO \"{t}\".projects (owner_id, name) SELECT id, 'p' FROM \"{t}\".users; \
         INSERT INTO \"{t}\".tasks (project_id, title) SELECT id, 't' FROM \"{t}\".projects; \
         SELECT count(*) FROM \"{t}\".task_log"
    ));
    assert_eq!(fired.lines().last(), Some("1"));
    let index = query(&format!(
        "SELECT count(*) FROM pg_indexes WHERE schemaname = '{t}' AND indexname = 'tasks_due_on_idx'"
    ));
    assert_eq!(index, "1");
    let status = citus_mt(CITUS_SET, &["--tenants", &list, "status", "--check"]);
    assert_code(&status, 0);
    drop_all(&names);
    assert_eq!(
        query(&format!(
            "SELECT count(*) FROM citus_schemas WHERE schema_name::text IN ({})",
            sql_list(&names)
        )),
        "0"
    );
}

#[test]
#[ignore = "needs a Citus cluster: CITUS_TEST_URL"]
fn missing_tenants_are_created_distributed_and_down_and_redo_work() {
    let names = tenants("redo", 4);
    let list = names.join(",");
    let out = citus_up(CITUS_SET, &list, &["--missing", "create", "up"]);
    assert_code(&out, 0);
    assert_eq!(placement(&names).1, 4, "created as distributed schemas");
    let down = citus_up(CITUS_SET, &list, &["down", "--steps", "3", "--yes"]);
    assert_code(&down, 0);
    for name in &names {
        assert_eq!(versions(name), CITUS_VERSIONS - 3);
        assert_eq!(tables_on_workers(name, "^task_log"), 0, "reverted on the workers too");
    }
    let redo = citus_up(CITUS_SET, &list, &["redo", "--steps", "2", "--yes"]);
    assert_code(&redo, 0);
    assert_contains(&redo.stdout, &["2 reverted, 2 applied"]);
    let up = citus_up(CITUS_SET, &list, &["up"]);
    assert_code(&up, 0);
    for name in &names {
        assert_eq!(versions(name), CITUS_VERSIONS);
        assert_eq!(
            tables_on_workers(name, "^task_log_[0-9]+$"),
            1,
            "task_log's shard is back on a worker"
        );
    }
    drop_all(&names);
}

#[test]
#[ignore = "needs a Citus cluster: CITUS_TEST_URL"]
fn a_failing_migration_rolls_back_on_the_workers_too() {
    let names = tenants("fail", 2);
    let list = names.join(",");
    let set = MigDir::new();
    set.add(
        "2024-02-01-000001_base",
        "CREATE TABLE base (id bigint PRIMARY KEY);",
        Some("DROP TABLE base;"),
    );
    set.add(
        "2024-02-01-000002_broken",
        "CREATE TABLE broken (id bigint PRIMARY KEY, v text);\nCREATE INDEX broken_v ON broken (v);\n\
         ALTER TABLE base ADD COLUMN note text;\nSELECT missing_column FROM base;\n",
        Some("DROP TABLE broken;"),
    );
    let out = citus_up(set.path_str(), &list, &["--missing", "create", "up"]);
    assert_code(&out, 1);
    assert_contains(
        &out.stdout,
        &["up.sql: line 4: column \"missing_column\" does not exist (rolled back)"],
    );
    for name in &names {
        assert_eq!(versions(name), 1, "left at its last good version");
        assert_eq!(
            tables_on_workers(name, "^broken"),
            0,
            "neither shard nor shell of the new table"
        );
        assert_eq!(
            tables_on_workers(name, "^base_[0-9]+$"),
            1,
            "the earlier migration's shard stays"
        );
        let column = query(&format!(
            "SELECT result FROM run_command_on_workers($$SELECT count(*) FROM information_schema.columns \
             WHERE table_schema = '{name}' AND column_name = 'note'$$)"
        ));
        assert!(
            column.lines().all(|c| c.trim() == "0"),
            "ALTER rolled back on the workers: {column}"
        );
    }
    drop_all(&names);
}

#[test]
#[ignore = "needs a Citus cluster: CITUS_TEST_URL"]
fn concurrent_runners_never_apply_a_migration_twice() {
    let names = tenants("race", 8);
    let list = names.join(",");
    let spawn = || {
        let mut cmd = support::cli();
        cmd.arg("--database-url")
            .arg(coordinator())
            .args([
                "--migrations-dir",
                CITUS_SET,
                "--session-sql",
                TRIGGERS,
                "--tenants",
                &list,
            ])
            .args(["--missing", "create", "--concurrency", "3", "up"]);
        std::thread::spawn(move || support::run(&mut cmd))
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.join().expect("runner a"), b.join().expect("runner b"));
    assert_code(&a, 0);
    assert_code(&b, 0);
    let applied = |out: &Out| -> usize {
        let summary = out.stdout.lines().find(|l| l.starts_with("up: ")).expect("a summary");
        let before = summary.split(" migration(s) applied").next().expect("applied");
        before.rsplit(' ').next().expect("a count").parse().expect("a number")
    };
    assert_eq!(
        applied(&a) + applied(&b),
        names.len() * CITUS_VERSIONS,
        "each migration once"
    );
    for name in &names {
        assert_eq!(versions(name), CITUS_VERSIONS);
    }
    drop_all(&names);
}

#[test]
#[ignore = "needs a Citus cluster: CITUS_TEST_URL"]
fn a_worker_url_is_refused_before_any_change() {
    let coordinator = coordinator();
    let own_port = query("SELECT inet_server_port()");
    let worker_port = query("SELECT nodeport FROM pg_dist_node WHERE groupid > 0 ORDER BY nodeport LIMIT 1");
    let worker = coordinator.replace(&format!(":{own_port}/"), &format!(":{worker_port}/"));
    assert_ne!(worker, coordinator, "the worker URL is derived from the coordinator's");
    let name = &tenants("worker", 1)[0];
    let mut cmd = support::cli();
    cmd.arg("--database-url")
        .arg(&worker)
        .args(["--tenants", name, "--missing", "create", "up"]);
    let out = support::run(&mut cmd);
    assert_code(&out, 2);
    assert_contains(
        &out.stderr,
        &["is a Citus worker node", "nothing was changed", "coordinator"],
    );
    let schema = query_url(
        &worker,
        &format!("SELECT count(*) FROM pg_namespace WHERE nspname = '{name}'"),
    );
    assert_eq!(schema, "0");
}

#[test]
#[ignore = "needs a Citus cluster: CITUS_TEST_URL"]
fn one_round_trip_per_migration_fails_in_a_distributed_schema() {
    // Why Citus mode exists: the same set sent file by file (--citus off) is refused.
    let names = tenants("off", 1);
    let list = names.join(",");
    assert_code(
        &citus_up(
            CITUS_SET,
            &list,
            &["--missing", "create", "up", "--to", "20240101000001"],
        ),
        0,
    );
    let out = citus_up(CITUS_SET, &list, &["--citus", "off", "up"]);
    assert_code(&out, 1);
    assert_contains(
        &out.stdout,
        &["cannot insert multiple commands into a prepared statement"],
    );
    assert_eq!(versions(&names[0]), 1, "rolled back");
    assert_code(&citus_up(CITUS_SET, &list, &["up"]), 0);
    drop_all(&names);
}

// ---------------------------------------------------------------------------------------------
// Plain PostgreSQL (the ordinary test cluster)

#[test]
fn citus_mode_on_plain_postgres_runs_statement_by_statement_with_every_check() {
    let db = TestDb::new();
    let out = mt(
        &db,
        &["--citus", "on", "--tenants", "acme,globex", "--missing", "create", "up"],
    );
    assert_code(&out, 0);
    assert_eq!(db.query("SELECT count(*) FROM acme.__diesel_schema_migrations"), "5");
    assert_code(
        &mt(
            &db,
            &[
                "--citus",
                "on",
                "--tenants",
                "acme,globex",
                "redo",
                "--steps",
                "2",
                "--yes",
            ],
        ),
        0,
    );
    assert_code(&mt(&db, &["--citus", "on", "--tenants", "acme", "down", "--all"]), 0);
    assert_code(&mt(&db, &["--citus", "on", "tenant", "create", "initech"]), 0);

    let set = MigDir::new();
    set.add(
        "2024-03-01-000001_ok",
        "CREATE TABLE a (id int);",
        Some("DROP TABLE a;"),
    );
    set.add(
        "2024-03-01-000002_bad_line",
        "CREATE TABLE b (id int);\n\nSELECT nonexistent\n  FROM a;\n",
        Some("DROP TABLE b;"),
    );
    let out = mt_dir(
        &db,
        &set,
        &["--citus", "on", "--tenants", "t1", "--missing", "create", "up"],
    );
    assert_code(&out, 1);
    assert_contains(&out.stdout, &["up.sql: line 3: column \"nonexistent\" does not exist"]);
    assert_eq!(db.query("SELECT to_regclass('t1.b') IS NULL"), "t", "rolled back");

    let moves = MigDir::new();
    moves.add(
        "2024-03-01-000001_moves_search_path",
        "CREATE TABLE c (id int);\nSELECT set_config('search_path', 'public', true);\n",
        None,
    );
    let out = mt_dir(
        &db,
        &moves,
        &["--citus", "on", "--tenants", "t2", "--missing", "create", "up"],
    );
    assert_code(&out, 1);
    assert_contains(&out.stdout, &["a migration must not change search_path"]);
    assert_eq!(db.query("SELECT to_regclass('t2.c') IS NULL"), "t");
}

#[test]
fn session_sql_is_applied_after_every_reset_and_checked() {
    let db = TestDb::new();
    let set = MigDir::new();
    set.add(
        "2024-04-01-000001_reads_session",
        "CREATE TABLE seen AS SELECT current_setting('app.flag', true) AS flag;",
        Some("DROP TABLE seen;"),
    );
    let sql = "SET app.flag = 'on'";
    // One worker: each tenant gets the connection the previous one reset.
    let names = "s1,s2,s3";
    let args = [
        "--session-sql",
        sql,
        "--concurrency",
        "1",
        "--tenants",
        names,
        "--missing",
        "create",
        "up",
    ];
    assert_code(&mt_dir(&db, &set, &args), 0);
    for schema in ["s1", "s2", "s3"] {
        assert_eq!(db.query(&format!("SELECT flag FROM {schema}.seen")), "on", "{schema}");
    }
    // tenant create resets the session between creating and migrating an existing schema.
    let args = ["--session-sql", sql, "tenant", "create", "--if-not-exists", "s4", "s1"];
    assert_code(&mt_dir(&db, &set, &args), 0);
    assert_eq!(db.query("SELECT flag FROM s4.seen"), "on");

    for bad in ["COMMIT", "SET search_path = x", "SET a.b = 1; BEGIN"] {
        let out = mt_dir(&db, &set, &["--session-sql", bad, "--tenants", "s1", "up"]);
        assert_code(&out, 2);
        assert_contains(&out.stderr, &["session SQL"]);
    }
}
