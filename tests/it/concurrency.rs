//! Two runners at once on the same tenants: each migration runs exactly once per tenant.

use crate::helpers::*;
use crate::support::TestDb;
use std::process::Stdio;

#[test]
fn two_concurrent_up_processes_apply_each_migration_once() {
    let db = TestDb::new();
    let tenants = ["t1", "t2", "t3", "t4", "t5"];
    create_schemas(&db, &tenants);
    let dir = MigDir::new();
    // No IF NOT EXISTS: a second application would fail.
    dir.add(
        "2024-01-01-000001_slow",
        "CREATE TABLE slow (id int);\nSELECT pg_sleep(0.3);",
        Some("DROP TABLE slow;"),
    )
    .add(
        "2024-01-01-000002_counted",
        "CREATE TABLE counted (id int);\nSELECT pg_sleep(0.1);",
        Some("DROP TABLE counted;"),
    );

    let spawn = || {
        let mut c = cmd(&db, &["--tenants", "t1,t2,t3,t4,t5", "up"]);
        c.arg("--migrations-dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn migrate-tenants")
    };
    let (a, b) = (spawn(), spawn());
    let outputs = [a, b].map(|child| child.wait_with_output().expect("wait"));
    let mut applied_total = 0;
    for out in &outputs {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
        // "up: 5 tenant(s): ...; N migration(s) applied"
        let summary = line(&stdout, "up: ");
        let n: usize = summary
            .split("; ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no applied count in {summary:?}"));
        applied_total += n;
    }
    // Between them the two runs applied each migration exactly once per tenant.
    assert_eq!(applied_total, 10);
    for t in tenants {
        assert_eq!(
            db.query(&format!(
                "SELECT string_agg(version || ':' || n, ',' ORDER BY version) FROM \
                 (SELECT version, count(*) AS n FROM \"{t}\".__diesel_schema_migrations \
                  GROUP BY version) s"
            )),
            "20240101000001:1,20240101000002:1",
            "history of {t}"
        );
        for table in ["slow", "counted"] {
            assert_eq!(
                db.query(&format!(
                    "SELECT count(*) FROM pg_class WHERE relname = '{table}' AND relkind = 'r'"
                )),
                "5",
                "one {table} per tenant"
            );
            assert!(relation_exists(&db, t, table));
        }
    }
    assert_public_empty(&db);
}

#[test]
fn runners_on_different_tenants_do_not_wait_for_each_other() {
    let db = TestDb::new();
    create_schemas(&db, &["slow_one", "quick_one"]);
    let dir = MigDir::new();
    dir.add(
        "2024-01-01-000001_wait",
        "CREATE TABLE w (id int);\nSELECT pg_sleep(CASE WHEN current_schema() = 'slow_one' THEN 6 ELSE 0 END);",
        Some("DROP TABLE w;"),
    );
    let mut slow = cmd(&db, &["--tenants", "slow_one", "up"]);
    slow.arg("--migrations-dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut slow = slow.spawn().expect("spawn the slow runner");
    // Wait until the slow runner holds its tenant's lock and is inside the migration.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while db.query("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(CASE%' AND state = 'active' AND pid <> pg_backend_pid()") == "0" {
        assert!(std::time::Instant::now() < deadline, "the slow runner never started its migration");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let started = std::time::Instant::now();
    let quick = mt_dir(&db, &dir, &["--tenants", "quick_one", "up"]);
    let elapsed = started.elapsed();
    assert_code(&quick, 0);
    assert!(
        elapsed < std::time::Duration::from_secs(4),
        "quick_one waited {elapsed:?} for slow_one's runner"
    );
    assert!(
        slow.try_wait().expect("slow runner status").is_none(),
        "the slow runner should still be running"
    );
    assert!(slow.wait().expect("slow runner").success());
    assert_eq!(history(&db, "slow_one"), versions(&["20240101000001"]));
    assert_eq!(history(&db, "quick_one"), versions(&["20240101000001"]));
}
