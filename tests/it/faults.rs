//! Production faults, with real PostgreSQL: signals, a closed stdout, a lost server, another
//! runner's lock, lock timeouts and retries, all-or-nothing redo, INVALID indexes,
//! database-wide statements under concurrency, and kill -9 at many moments.

use crate::helpers::*;
use crate::support::{self, exec_url, query_url, Background, Cluster, TestDb};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Tenants `<prefix>1..=<n>`.
fn tenants(prefix: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}{i}")).collect()
}

/// Waits for the child, at most `limit`; returns its exit code and how long it took.
fn wait_with_limit(child: &mut Child, limit: Duration) -> (i32, Duration) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return (status.code().unwrap_or(-1), start.elapsed());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("the runner did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
}

fn read_all(child: &mut Child) -> (String, String) {
    use std::io::Read;
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    eprintln!("--- stdout ---\n{out}--- stderr ---\n{err}--- end ---");
    (out, err)
}

/// Backends of the runner still busy on `db`.
fn runner_backends(url: &str) -> String {
    query_url(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'migrate-tenants%' AND state <> 'idle'",
    )
}

fn advisory_locks(url: &str) -> String {
    query_url(
        url,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
}

/// Another session holding `tenant`'s advisory lock (released on drop), once it holds it.
fn hold_lock(db: &TestDb, tenant: &str) -> Background {
    let key = migrate_tenants::SchemaName::tenant(tenant).unwrap().lock_key();
    let holder = Background::start(&db.url, &format!("SELECT pg_advisory_lock({key}), pg_sleep(60)"));
    holder.wait_for(&format!(
        "SELECT count(*) = 1 FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND objid = ({key}::bigint & 4294967295)::oid"
    ));
    holder
}

fn slow_set(seconds: u32) -> MigDir {
    let dir = MigDir::new();
    dir.add("0001_a", "CREATE TABLE a (id int);", Some("DROP TABLE a;"));
    dir.add(
        "0002_slow",
        &format!("CREATE TABLE b (id int);\nSELECT pg_sleep({seconds});"),
        Some("DROP TABLE b;"),
    );
    dir
}

fn interrupted_run_rolls_back_and_exits(sig: &str, code: i32) {
    let db = TestDb::new();
    let names = tenants("sig", 4);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    create_schemas(&db, &refs);
    let dir = slow_set(60);
    let mut child = cmd(&db, &["--tenants", &names.join(","), "--concurrency", "2", "up"])
        .arg("--migrations-dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    support::wait_until(
        &db.url,
        "SELECT count(*) >= 2 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)%' \
         AND application_name LIKE 'migrate-tenants%'",
        Duration::from_secs(30),
    );
    signal(&child, sig);
    let (exit, took) = wait_with_limit(&mut child, Duration::from_secs(20));
    let (stdout, _) = read_all(&mut child);
    assert_eq!(exit, code, "exit code after SIG{sig}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_contains(&stdout, &["stopped early: interrupted", "interrupted"]);
    // Nothing of the cancelled migration committed, and nothing is left running or locked.
    assert_eq!(runner_backends(&db.url), "0");
    assert_eq!(advisory_locks(&db.url), "0");
    for t in &names {
        assert!(!history(&db, t).contains(&"0002".to_string()), "{t}: 0002 recorded");
        assert!(!relation_exists(&db, t, "b"), "{t}.b exists");
    }
    assert!(
        stdout.contains("skipped: not started: the run was interrupted"),
        "{stdout}"
    );
    // The run can simply be done again later (here with a fast set: no sleep).
    let fast = MigDir::new();
    fast.add("0001_a", "CREATE TABLE a (id int);", None);
    fast.add("0002_slow", "CREATE TABLE b (id int);", None);
    assert_code(&mt_dir(&db, &fast, &["--tenants", &names.join(","), "up"]), 0);
}

#[test]
fn sigint_cancels_the_migrations_in_flight_and_exits_130() {
    interrupted_run_rolls_back_and_exits("INT", 130);
}

#[test]
fn sigterm_cancels_the_migrations_in_flight_and_exits_143() {
    interrupted_run_rolls_back_and_exits("TERM", 143);
}

#[test]
fn a_closed_stdout_never_kills_the_run() {
    let db = TestDb::new();
    let names = tenants("pipe", 20);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    create_schemas(&db, &refs);
    let mut child = cmd(&db, &["--tenants", &names.join(","), "--concurrency", "2", "up"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // `| head -1`: read one line, then close the pipe.
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("first line");
    assert!(first.starts_with("migrations: 5 from"), "{first}");
    let (exit, _) = wait_with_limit(&mut child, Duration::from_secs(120));
    let (_, stderr) = read_all(&mut child);
    assert_eq!(exit, 0, "the run finishes and reports its own outcome");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for t in &names {
        assert_eq!(history(&db, t), versions(&BASIC), "{t}");
    }
}

#[test]
fn a_lost_server_stops_the_run_within_seconds_with_exit_3_and_a_rerun_converges() {
    let cluster = Cluster::start("lost");
    let url = cluster.url.clone();
    let names = tenants("lost", 40);
    exec_url(
        &url,
        &names
            .iter()
            .map(|n| format!("CREATE SCHEMA {n};\n"))
            .collect::<String>(),
    );
    let dir = MigDir::new();
    dir.add("0001_a", "CREATE TABLE a (id int);\nSELECT pg_sleep(0.3);", None);
    dir.add("0002_b", "CREATE TABLE b (id int);", None);
    let mut child = support::cli()
        .arg("--database-url")
        .arg(&url)
        .args([
            "--tenants",
            &names.join(","),
            "--concurrency",
            "2",
            "--connect-timeout",
            "2",
            "up",
        ])
        .arg("--migrations-dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(1500));
    cluster.stop_immediate();
    let (exit, took) = wait_with_limit(&mut child, Duration::from_secs(60));
    let (stdout, _) = read_all(&mut child);
    assert_eq!(exit, 3, "a lost server is exit 3");
    assert!(took < Duration::from_secs(15), "stopped after {took:?}");
    assert_contains(&stdout, &["the database server was lost", "not started"]);
    cluster.start_again();
    let out = support::run(
        support::cli()
            .arg("--database-url")
            .arg(&url)
            .args(["--tenants", &names.join(","), "up"])
            .arg("--migrations-dir")
            .arg(dir.path()),
    );
    assert_code(&out, 0);
    for t in &names {
        let history = query_url(
            &url,
            &format!("SELECT string_agg(version, ',' ORDER BY version) FROM {t}.__diesel_schema_migrations"),
        );
        assert_eq!(history, "0001,0002", "{t}");
    }
}

#[test]
fn a_held_tenant_lock_is_waited_for_a_bounded_time_and_its_holder_is_named() {
    let db = TestDb::new();
    create_schemas(&db, &["held"]);
    let holder = hold_lock(&db, "held");
    let started = Instant::now();
    let out = mt(&db, &["--tenants", "held", "--lock-wait-timeout", "1", "up"]);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_code(&out, 1);
    assert_contains(
        &out.stdout,
        &[
            "held: waiting for its lock, held by pid",
            &holder.name,
            "another runner holds the lock of held after 1 s",
            "--lock-wait-timeout",
        ],
    );
    assert!(history(&db, "held").is_empty());
    drop(holder);
    assert_code(&mt(&db, &["--tenants", "held", "up"]), 0);
}

#[test]
fn connections_are_named_in_pg_stat_activity() {
    let db = TestDb::new();
    create_schemas(&db, &["named"]);
    let holder = hold_lock(&db, "named");
    let mut child = cmd(&db, &["--tenants", "named", "--lock-wait-timeout", "30", "up"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    support::wait_until(
        &db.url,
        &format!(
            "SELECT count(*) >= 1 FROM pg_stat_activity WHERE application_name = 'migrate-tenants {} pid {}'",
            env!("CARGO_PKG_VERSION"),
            child.id()
        ),
        Duration::from_secs(20),
    );
    drop(holder);
    let (exit, _) = wait_with_limit(&mut child, Duration::from_secs(30));
    read_all(&mut child);
    assert_eq!(exit, 0);
}

fn users_set() -> MigDir {
    let dir = MigDir::new();
    dir.add("0001_users", "CREATE TABLE users (id int);", Some("DROP TABLE users;"));
    dir.add(
        "0002_users_email",
        "ALTER TABLE users ADD COLUMN email text;",
        Some("ALTER TABLE users DROP COLUMN email;"),
    );
    dir
}

/// `up` of tenant `rt` (lock timeout 200 ms, `retries` retries) while another session holds
/// an exclusive lock on `rt.users` for `seconds`; the blocker lives as long as the caller keeps it.
fn up_behind_a_table_lock(db: &TestDb, dir: &MigDir, seconds: &str, retries: &str) -> (Background, support::Out) {
    let blocker = Background::start(
        &db.url,
        &format!("BEGIN; LOCK TABLE rt.users IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep({seconds}); COMMIT;"),
    );
    blocker.wait_for(
        "SELECT count(*) >= 1 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
         WHERE c.relname = 'users' AND l.mode = 'AccessExclusiveLock' AND l.granted",
    );
    let args = [
        "--tenants",
        "rt",
        "--lock-timeout",
        "200",
        "--retries",
        retries,
        "--format",
        "json",
        "up",
    ];
    (blocker, mt_dir(db, dir, &args))
}

fn retries_of(json: &str, tenant: &str) -> u64 {
    let doc: serde_json::Value = serde_json::from_str(json).expect("json report");
    doc["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["schema"] == tenant)
        .map(|t| t["retries"].as_u64().unwrap())
        .unwrap()
}

#[test]
fn a_lock_timeout_is_retried_until_the_blocker_goes_away_and_fails_after_n_attempts_otherwise() {
    let db = TestDb::new();
    create_schemas(&db, &["rt"]);
    let dir = users_set();
    assert_code(&mt_dir(&db, &dir, &["--tenants", "rt", "up", "--to", "0001"]), 0);
    // A blocker for about 1.5 s: the retries outlast it.
    let (blocker, out) = up_behind_a_table_lock(&db, &dir, "1.5", "5");
    assert_code(&out, 0);
    assert!(retries_of(&out.stdout, "rt") >= 1, "{}", out.stdout);
    assert_eq!(history(&db, "rt"), ["0001", "0002"]);
    drop(blocker);

    // A blocker that stays: one retry, then the tenant fails, rolled back.
    assert_code(&mt_dir(&db, &dir, &["--tenants", "rt", "down"]), 0);
    let (_blocker, out) = up_behind_a_table_lock(&db, &dir, "60", "1");
    assert_code(&out, 1);
    assert_eq!(retries_of(&out.stdout, "rt"), 1, "{}", out.stdout);
    assert_contains(&out.stdout, &["lock timeout", "rolled back"]);
    assert_eq!(history(&db, "rt"), ["0001"]);
}

#[test]
fn redo_is_all_or_nothing_when_the_reapply_fails() {
    let db = TestDb::new();
    create_schemas(&db, &["rd"]);
    let dir = MigDir::new();
    dir.add("0001_items", "CREATE TABLE items (id int);", Some("DROP TABLE items;"));
    // A real-world pattern: an empty down.sql for an up.sql that adds a column.
    dir.add("0002_items_note", "ALTER TABLE items ADD COLUMN note text;", Some(""));
    assert_code(&mt_dir(&db, &dir, &["--tenants", "rd", "up"]), 0);
    let out = mt_dir(&db, &dir, &["--tenants", "rd", "redo"]);
    assert_code(&out, 1);
    assert_contains(
        &out.stdout,
        &[
            "rd: FAILED in 0002_items_note",
            "already exists",
            "it is as it was before",
        ],
    );
    assert_eq!(history(&db, "rd"), ["0001", "0002"], "the revert was rolled back too");
    assert_eq!(
        db.query("SELECT count(*) FROM information_schema.columns WHERE table_schema = 'rd' AND column_name = 'note'"),
        "1"
    );
}

#[test]
fn up_atomic_leaves_a_tenant_at_its_old_version_or_its_new_one() {
    let db = TestDb::new();
    create_schemas(&db, &["at"]);
    let dir = MigDir::new();
    dir.add("0001_a", "CREATE TABLE a (id int);", None);
    dir.add("0002_b", "CREATE TABLE b (id int);", None);
    dir.add("0003_bad", "SELECT * FROM nonexistent;", None);
    let out = mt_dir(&db, &dir, &["--tenants", "at", "up", "--atomic"]);
    assert_code(&out, 1);
    assert!(history(&db, "at").is_empty(), "nothing was kept");
    assert!(!relation_exists(&db, "at", "a"));
    // A set with a migration outside a transaction is refused up front.
    let outside = MigDir::new();
    outside.add("0001_a", "CREATE TABLE a (id int);", None);
    outside.add("0002_idx", "CREATE INDEX CONCURRENTLY a_id ON a (id);", None);
    outside.file("0002_idx/metadata.toml", "run_in_transaction = false\n");
    let refused = mt_dir(&db, &outside, &["--tenants", "at", "up", "--atomic"]);
    assert_code(&refused, 2);
    assert_contains(
        &refused.stderr,
        &["0002_idx", "outside a transaction", "nothing was changed"],
    );
}

#[test]
fn an_invalid_index_left_by_a_failed_concurrent_build_is_never_recorded_as_applied() {
    let db = TestDb::new();
    create_schemas(&db, &["ix"]);
    let dir = MigDir::new();
    dir.add(
        "0001_emails",
        "CREATE TABLE emails (address text);\nINSERT INTO emails VALUES ('a@x'), ('a@x');",
        None,
    );
    dir.add(
        "0002_emails_unique",
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS emails_address ON emails (address);",
        None,
    );
    dir.file("0002_emails_unique/metadata.toml", "run_in_transaction = false\n");
    let first = mt_dir(&db, &dir, &["--tenants", "ix", "up"]);
    assert_code(&first, 1);
    assert_eq!(history(&db, "ix"), ["0001"]);
    // The data is fixed; the retried build skips the INVALID index (IF NOT EXISTS).
    db.exec("DELETE FROM ix.emails WHERE ctid = (SELECT max(ctid) FROM ix.emails)");
    let second = mt_dir(&db, &dir, &["--tenants", "ix", "up"]);
    assert_code(&second, 1);
    assert_contains(
        &second.stdout,
        &[
            "INVALID index",
            "ix.emails_address",
            "DROP INDEX CONCURRENTLY ix.emails_address",
        ],
    );
    assert_eq!(history(&db, "ix"), ["0001"], "not recorded while the index is INVALID");
    db.exec("DROP INDEX CONCURRENTLY ix.emails_address");
    assert_code(&mt_dir(&db, &dir, &["--tenants", "ix", "up"]), 0);
    assert_eq!(
        db.query("SELECT indisvalid FROM pg_index WHERE indexrelid = 'ix.emails_address'::regclass"),
        "t"
    );
}

#[test]
fn tenants_creating_the_same_extension_at_once_all_succeed() {
    let db = TestDb::new();
    let names = tenants("ext", 8);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    create_schemas(&db, &refs);
    let dir = MigDir::new();
    dir.add(
        "0001_kv",
        "CREATE EXTENSION IF NOT EXISTS hstore SCHEMA public;\nCREATE TABLE kv (h hstore);",
        None,
    );
    let out = mt_dir(&db, &dir, &["--tenants", &names.join(","), "--concurrency", "8", "up"]);
    assert_code(&out, 0);
    for t in &names {
        assert!(relation_exists(&db, t, "kv"), "{t}");
    }
}

#[test]
fn a_migration_that_drops_the_runners_lock_is_reported() {
    let db = TestDb::new();
    create_schemas(&db, &["lk"]);
    let dir = MigDir::new();
    dir.add(
        "0001_unlock",
        "CREATE TABLE t (id int);\nSELECT pg_advisory_unlock_all();",
        None,
    );
    let out = mt_dir(&db, &dir, &["--tenants", "lk", "up"]);
    assert_code(&out, 1);
    assert_contains(&out.stdout, &["lk: FAILED", "advisory lock of lk was lost"]);
}

#[test]
fn kill_9_at_any_moment_leaves_every_tenant_consistent_and_a_rerun_converges() {
    let db = TestDb::new();
    let names = tenants("crash", 30);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    create_schemas(&db, &refs);
    let dir = MigDir::new();
    for v in 1..=4 {
        dir.add(
            &format!("000{v}_t{v}"),
            &format!("CREATE TABLE t{v} (id int);\nSELECT pg_sleep(0.01);"),
            Some(&format!("DROP TABLE t{v};")),
        );
    }
    let consistent = |db: &TestDb| {
        for t in &names {
            let tables: Vec<String> = tables_in(db, t)
                .into_iter()
                .filter(|n| n != "__diesel_schema_migrations")
                .collect();
            let expected: Vec<String> = history(db, t)
                .iter()
                .map(|v| format!("t{}", v.trim_start_matches('0')))
                .collect();
            assert_eq!(tables, expected, "{t}: objects and history disagree");
        }
    };
    for moment in 0..10u64 {
        let mut child = cmd(&db, &["--tenants", &names.join(","), "--concurrency", "4", "up"])
            .arg("--migrations-dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(40 + 60 * moment));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        // What the server had received before the kill finishes (or aborts) on its own.
        support::wait_until(
            &db.url,
            "SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name LIKE 'migrate-tenants%' \
             AND state <> 'idle'",
            Duration::from_secs(20),
        );
        consistent(&db);
        if moment % 3 == 2 {
            // Some reverts interrupted too.
            let mut down = cmd(&db, &["--tenants", &names.join(","), "down", "--all", "--yes"])
                .arg("--migrations-dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(30 * moment));
            let _ = down.kill();
            let _ = down.wait();
            support::wait_until(
                &db.url,
                "SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name LIKE 'migrate-tenants%' \
                 AND state <> 'idle'",
                Duration::from_secs(20),
            );
            consistent(&db);
        }
    }
    let out = mt_dir(&db, &dir, &["--tenants", &names.join(","), "up"]);
    assert_code(&out, 0);
    consistent(&db);
    for t in &names {
        assert_eq!(history(&db, t), ["0001", "0002", "0003", "0004"], "{t}");
    }
}

#[test]
fn problems_shared_by_every_tenant_are_found_once_before_any_tenant() {
    // A read-only server: refused up front, exit 2, nothing touched.
    let db = TestDb::new();
    create_schemas(&db, &["ro1", "ro2"]);
    db.exec(&format!(
        "ALTER DATABASE \"{}\" SET default_transaction_read_only = on",
        db.name
    ));
    let out = mt(&db, &["--tenants", "ro1,ro2", "up"]);
    assert_code(&out, 2);
    assert_contains(&out.stderr, &["the server is read-only", "nothing was changed"]);
    assert_eq!(out.stdout.matches("FAILED").count(), 0, "not once per tenant");
    assert_code(&mt(&db, &["--tenants", "ro1,ro2", "status"]), 0); // reading still works

    // A role that may not create schemas: refused up front when schemas would be created.
    let db = TestDb::new();
    let role = format!("mt_nocreate_{}", std::process::id());
    db.exec(&format!(
        "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN; REVOKE CREATE ON DATABASE \"{}\" FROM PUBLIC",
        db.name
    ));
    let url = db
        .url
        .replacen("postgres://postgres@", &format!("postgres://{role}@"), 1);
    let out = support::run(support::cli().arg("--database-url").arg(&url).args([
        "--tenants",
        "new1",
        "--missing",
        "create",
        "up",
    ]));
    assert_code(&out, 2);
    assert_contains(&out.stderr, &[&role, "may not create schemas", "nothing was changed"]);
    db.exec(&format!("DROP OWNED BY {role}; DROP ROLE {role}"));

    // Out-of-range values are refused by the command line.
    for args in [
        &["--lock-timeout", "0"][..],
        &["--lock-timeout", "99999999999999"],
        &["--retries", "11"],
    ] {
        let out = mt(&db, &[&["--tenants", "x"][..], args, &["up"]].concat());
        assert_code(&out, 2);
    }
}

#[test]
fn more_workers_than_free_connections_are_capped_with_a_warning() {
    let cluster = Cluster::start_with("slots", "max_connections = 12\nsuperuser_reserved_connections = 1\n");
    let names = tenants("slot", 12);
    exec_url(
        &cluster.url,
        &names
            .iter()
            .map(|n| format!("CREATE SCHEMA {n};\n"))
            .collect::<String>(),
    );
    let out = support::run(support::cli().arg("--database-url").arg(&cluster.url).args([
        "--tenants",
        &names.join(","),
        "--concurrency",
        "50",
        "up",
    ]));
    assert_code(&out, 0);
    assert_contains(
        &out.stderr,
        &["warning: the server has", "free connection(s) for 50 worker(s)"],
    );
}

#[test]
fn a_tenant_that_fails_before_its_history_is_read_again_keeps_its_real_state() {
    let db = TestDb::new();
    create_schemas(&db, &["st"]);
    assert_code(&mt(&db, &["--tenants", "st", "up", "--to", BASIC[1]]), 0);
    let _holder = hold_lock(&db, "st");
    let out = mt(
        &db,
        &["--tenants", "st", "--lock-wait-timeout", "1", "--format", "json", "up"],
    );
    assert_code(&out, 1);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let tenant = &doc["tenants"][0];
    assert_eq!(tenant["failure"], "lock_wait");
    assert_eq!(tenant["version_before"], BASIC[1]);
    assert_eq!(tenant["version_after"], BASIC[1]);
    assert_eq!(tenant["pending_count"], 3);
}

#[test]
fn a_statement_running_past_the_statement_timeout_fails_and_rolls_back() {
    let db = TestDb::new();
    create_schemas(&db, &["slow"]);
    let dir = MigDir::new();
    dir.add("0001_slow", "CREATE TABLE s (id int);\nSELECT pg_sleep(5);", None);
    let started = Instant::now();
    let out = mt_dir(
        &db,
        &dir,
        &[
            "--tenants",
            "slow",
            "--statement-timeout",
            "300",
            "--retries",
            "0",
            "up",
        ],
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_code(&out, 1);
    assert_contains(
        &out.stdout,
        &["slow: FAILED in 0001_slow", "statement timeout", "rolled back"],
    );
    assert!(!relation_exists(&db, "slow", "s"));
}

#[test]
fn max_failures_stops_starting_tenants_after_n_failures() {
    let db = TestDb::new();
    create_schemas(&db, &["mf1", "mf2", "mf3", "mf4", "mf5", "mf6"]);
    let dir = MigDir::new();
    dir.add("0001_bad", "SELECT * FROM nonexistent;", None);
    let out = mt_dir(
        &db,
        &dir,
        &[
            "--tenants",
            "mf1,mf2,mf3,mf4,mf5,mf6",
            "--concurrency",
            "1",
            "--max-failures",
            "2",
            "up",
        ],
    );
    assert_code(&out, 1);
    assert_eq!(
        out.stdout.matches(": FAILED").count(),
        2 + 2,
        "two failures, each in its line and the summary"
    );
    assert_eq!(
        out.stdout
            .matches("skipped: not started: the run reached its maximum")
            .count(),
        4
    );
    assert_contains(&out.stdout, &["stopped early: too many tenants failed"]);
}

/// A set that skips validation (what the validator refuses must still be caught at run time).
fn unchecked(migrations: &[(&str, &str, bool)]) -> migrate_tenants::MigrationSet {
    let list = migrations
        .iter()
        .map(|(dir, up, in_tx)| migrate_tenants::Migration {
            dir_name: dir.to_string(),
            version: dir.split('_').next().unwrap().to_string(),
            up: up.to_string(),
            down: migrate_tenants::DownSql::Missing,
            run_in_transaction: *in_tx,
        })
        .collect();
    migrate_tenants::MigrationSet::__unchecked(migrate_tenants::Origin::Directory("unchecked".into()), list)
}

fn run_unchecked(db: &TestDb, tenant: &str, set: migrate_tenants::MigrationSet) -> migrate_tenants::TenantReport {
    let report = migrate_tenants::Runner::new(set)
        .database_url(&db.url)
        .tenants(migrate_tenants::TenantSource::list([tenant]))
        .retries(0)
        .up()
        .expect("run");
    report.tenants.into_iter().next().expect("one tenant")
}

#[test]
fn a_migration_that_ends_its_own_transaction_is_reported_as_not_rolled_back() {
    let db = TestDb::new();
    create_schemas(&db, &["split"]);
    let set = unchecked(&[(
        "0001_split",
        "CREATE TABLE before_commit (id int); COMMIT; CREATE TABLE after_commit (id int);",
        true,
    )]);
    let report = run_unchecked(&db, "split", set);
    let migrate_tenants::Outcome::Failed { error, .. } = &report.outcome else {
        panic!("{report:?}");
    };
    assert_contains(error, &["ended its transaction", "NOT rolled back"]);
    assert!(history(&db, "split").is_empty(), "never recorded");
    assert!(
        relation_exists(&db, "split", "before_commit"),
        "what the COMMIT kept is said, not hidden"
    );
}

#[test]
fn a_non_transactional_migration_that_leaves_a_transaction_open_is_caught() {
    let db = TestDb::new();
    create_schemas(&db, &["open"]);
    let set = unchecked(&[("0001_open", "BEGIN", false)]);
    let report = run_unchecked(&db, "open", set);
    let migrate_tenants::Outcome::Failed { error, .. } = &report.outcome else {
        panic!("{report:?}");
    };
    assert_contains(error, &["left a transaction open"]);
    assert!(
        history(&db, "open").is_empty(),
        "the history row was not swallowed by the open transaction"
    );
    // The connection was cleaned up: the next run works.
    let ok = unchecked(&[("0001_open", "CREATE TABLE t (id int)", true)]);
    assert!(!run_unchecked(&db, "open", ok).failed());
}
