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
